use keel_client::{
    txn_put, txn_range, ClientError, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp,
};

use crate::harness::Etcd;

#[tokio::test]
async fn put_get_delete() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;

    let first = client.put("/kv/a", "1").await.unwrap();
    let second = client.put_with("/kv/a", "2", PutOptions::new().with_prev_kv()).await.unwrap();
    assert_eq!(second.prev_kv.unwrap().value, b"1");
    client.put("/kv/b", "3").await.unwrap();
    client.put("/kw", "outside").await.unwrap();

    let a = client.get("/kv/a").await.unwrap();
    assert_eq!(a.kvs.len(), 1);
    assert_eq!(a.kvs[0].value, b"2");
    assert_eq!(a.kvs[0].version, 2);
    assert!(client.get("/kv/none").await.unwrap().kvs.is_empty());

    let old = client.get_with("/kv/a", GetOptions::new().with_revision(first.header.unwrap().revision)).await.unwrap();
    assert_eq!(old.kvs[0].value, b"1");

    let prefix = client
        .get_with("/kv/", GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Descend))
        .await
        .unwrap();
    let keys: Vec<&[u8]> = prefix.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"/kv/b"[..], b"/kv/a"]);

    let limited = client.get_with("/kv/", GetOptions::new().with_prefix().with_limit(1)).await.unwrap();
    assert_eq!((limited.kvs.len(), limited.more, limited.count), (1, true, 2));

    let counted = client.get_with("/kv/", GetOptions::new().with_prefix().with_count_only()).await.unwrap();
    assert_eq!((counted.kvs.len(), counted.count), (0, 2));

    let keys_only = client.get_with("/kv/a", GetOptions::new().with_keys_only().with_serializable()).await.unwrap();
    assert!(keys_only.kvs[0].value.is_empty());

    let from_key = client.get_with("/kv/b", GetOptions::new().with_from_key()).await.unwrap();
    assert_eq!(from_key.count, 2, "/kv/b and /kw");

    let deleted = client.delete_with("/kv/", DeleteOptions::new().with_prefix().with_prev_kv()).await.unwrap();
    assert_eq!(deleted.deleted, 2);
    assert_eq!(deleted.prev_kvs.len(), 2);
    assert_eq!(client.delete("/kv/a").await.unwrap().deleted, 0);
    assert_eq!(client.get("/kw").await.unwrap().kvs.len(), 1);
}

#[tokio::test]
async fn txn_create_if_absent() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let create = || {
        Txn::new()
            .when([Compare::create_revision("/txn/k", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("/txn/k", "mine", PutOptions::new())])
            .or_else([TxnOp::get("/txn/k", GetOptions::new())])
    };

    let won = client.txn(create()).await.unwrap();
    assert!(won.succeeded);
    let revision = won.header.unwrap().revision;
    assert!(txn_put(&won, 0).is_some());

    let lost = client.txn(create()).await.unwrap();
    assert!(!lost.succeeded);
    let existing = &txn_range(&lost, 0).unwrap().kvs[0];
    assert_eq!((existing.value.as_slice(), existing.create_revision), (&b"mine"[..], revision));

    let swap = Txn::new()
        .when([
            Compare::value("/txn/k", CompareOp::Equal, "mine"),
            Compare::mod_revision("/txn/k", CompareOp::Equal, revision),
        ])
        .and_then([
            TxnOp::put("/txn/k", "swapped", PutOptions::new()),
            TxnOp::get("/txn/", GetOptions::new().with_prefix()),
        ]);
    let swapped = client.txn(swap).await.unwrap();
    assert!(swapped.succeeded);
    assert_eq!(txn_range(&swapped, 1).unwrap().kvs[0].value, b"swapped");
}

#[tokio::test]
async fn reads_below_the_compaction_revision_fail_as_compacted() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let first = client.put("/c", "1").await.unwrap().header.unwrap().revision;
    let second = client.put("/c", "2").await.unwrap().header.unwrap().revision;
    client.compact(second, true).await.unwrap();

    let error = client.get_with("/c", GetOptions::new().with_revision(first)).await.unwrap_err();
    assert!(matches!(error, ClientError::Compacted { .. }), "{error:?}");
    assert_eq!(client.get_with("/c", GetOptions::new().with_revision(second)).await.unwrap().kvs[0].value, b"2");
}
