use std::time::Duration;

use keel_client::{Client, ClientError, ClientOptions, Code, GetOptions};

use crate::harness::{dead_endpoint, Etcd, Proxy};

#[tokio::test]
async fn connect_skips_a_dead_endpoint() {
    let etcd = Etcd::start().await;
    let client = Client::connect([dead_endpoint(), etcd.endpoint()], ClientOptions::default()).await.unwrap();
    assert_eq!(client.current_endpoint().await, etcd.endpoint());
    client.put("/f", "1").await.unwrap();
    assert_eq!(client.get("/f").await.unwrap().kvs[0].value, b"1");
}

#[tokio::test]
async fn connect_fails_when_no_endpoint_answers() {
    let options = ClientOptions { connect_timeout: Duration::from_secs(1), ..Default::default() };
    let error = Client::connect([dead_endpoint(), dead_endpoint()], options).await.unwrap_err();
    assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
    assert!(matches!(
        Client::connect(Vec::<String>::new(), ClientOptions::default()).await,
        Err(ClientError::NoEndpoints)
    ));
    assert!(matches!(
        Client::connect(["unix:///run/etcd.sock"], ClientOptions::default()).await,
        Err(ClientError::InvalidEndpoint { .. })
    ));
}

#[tokio::test]
async fn calls_move_to_the_next_endpoint_when_the_current_one_goes_away() {
    let etcd = Etcd::start().await;
    let mut first = Proxy::start(etcd.addr());
    let second = Proxy::start(etcd.addr());
    let client = Client::connect([first.endpoint(), second.endpoint()], ClientOptions::default()).await.unwrap();
    assert_eq!(client.current_endpoint().await, first.endpoint());
    client.put("/f/1", "before").await.unwrap();

    first.stop().await;
    // A read is retried on the next endpoint whatever the failure was.
    let read = client.get_with("/f/", GetOptions::new().with_prefix()).await.unwrap();
    assert_eq!(read.kvs[0].value, b"before");
    assert_eq!(client.current_endpoint().await, second.endpoint());
    client.put("/f/2", "after").await.unwrap();
    assert_eq!(client.get("/f/2").await.unwrap().kvs.len(), 1);
}

#[tokio::test]
async fn a_write_after_the_endpoint_goes_away_lands_once_on_the_next() {
    let etcd = Etcd::start().await;
    let mut first = Proxy::start(etcd.addr());
    let client = Client::connect([first.endpoint(), etcd.endpoint()], ClientOptions::default()).await.unwrap();
    first.stop().await;
    // Whether this put meets a refused reconnect (provably not sent: retried
    // on the next endpoint) or the dying connection (maybe sent: returned as
    // Unavailable, not retried) depends on whether the client has seen the
    // connection close yet. Either way the client moves on, and the write
    // is applied once.
    if let Err(e) = client.put("/once", "v").await {
        assert_eq!(e.code(), Some(Code::Unavailable), "{e:?}");
        client.put("/once", "v").await.unwrap();
    }
    assert_eq!(client.current_endpoint().await, etcd.endpoint());
    assert_eq!(client.get("/once").await.unwrap().kvs[0].version, 1);
}
