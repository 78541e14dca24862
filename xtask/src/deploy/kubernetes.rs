//! deploy/kubernetes, checked without a Kubernetes cluster.
//!
//! 1. Schemas: every manifest against Kubernetes' own OpenAPI schemas, strictly
//!    (an unknown field fails), by `kubernetes-validate` (PyPI; its schemas
//!    ship in the package, so it runs offline).
//! 2. What schemas cannot see: the kustomization lists every manifest; the
//!    StatefulSet's serviceName is a headless Service that publishes pods
//!    before they are ready; Services and the PodDisruptionBudget select the
//!    pods; the probes ask /readyz and /livez on a port the pod has.
//! 3. The proxy DaemonSet ([`check_proxy`]): its pods and the members' are
//!    told apart by every selector; a Service with `internalTrafficPolicy:
//!    Local` reaches its listen port; it runs the members' image as
//!    `grpc-proxy start`, under their container securityContext, with
//!    resource requests; its `--endpoints` name members on their client
//!    port; its probes ask /readyz and /livez on the port of its
//!    `--metrics-addr` or `--listen-addr`. That its flags parse is asked of
//!    keel itself ([`super::check_proxy_args`]).
//! 4. The pod template run by Docker as a kubelet would run it: each pod a
//!    container with the pod's user, read-only root, dropped capabilities,
//!    its volumes, the ConfigMap's variables, `$(VAR)` expanded in its args,
//!    and the names the headless Service gives (`keel-0.keel-peer`, and with
//!    the namespace) as network aliases. The members must form a cluster
//!    and pass their probes; a proxy pod of the DaemonSet, run the same way,
//!    must pass its probes and serve what was written to the members; then
//!    deploy/README.md's scaling steps (`member add`, the ConfigMap, one more
//!    replica) must bring a fourth member in.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_yaml::Value;

use super::docker::{etcdctl, http_get, retry, Docker};
use crate::cargo;

/// The namespace the pods are taken to run in (it shows only in names).
const NAMESPACE: &str = "default";

pub struct Manifests {
    files: Vec<PathBuf>,
    docs: Vec<Value>,
}

impl Manifests {
    /// The manifests deploy/kubernetes/kustomization.yaml lists, which must
    /// be every other YAML file there.
    pub fn load() -> Result<Self> {
        let dir = cargo::workspace_root().join("deploy/kubernetes");
        let kustomization: Value = serde_yaml::from_str(&fs::read_to_string(dir.join("kustomization.yaml"))?)?;
        let listed: Vec<&str> = kustomization["resources"]
            .as_sequence()
            .context("kustomization.yaml has no resources")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut present: Vec<String> = fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .collect();
        present.sort();
        let mut sorted = listed.clone();
        sorted.sort();
        ensure!(sorted == present, "kustomization.yaml lists {sorted:?}, the folder holds {present:?}");

        let mut files = Vec::new();
        let mut docs = Vec::new();
        for name in listed {
            let path = dir.join(name);
            let text = fs::read_to_string(&path)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                docs.push(Value::deserialize(doc).with_context(|| format!("parsing {name}"))?);
            }
            files.push(path);
        }
        Ok(Self { files, docs })
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> {
        self.docs.iter().filter(move |doc| doc["kind"] == kind)
    }

    fn one<'a>(&'a self, kind: &'a str) -> Result<&'a Value> {
        let mut all = self.of_kind(kind);
        let doc = all.next().with_context(|| format!("no {kind} in deploy/kubernetes"))?;
        ensure!(all.next().is_none(), "more than one {kind} in deploy/kubernetes");
        Ok(doc)
    }
}

/// `kubernetes-validate --strict` on every manifest.
pub fn validate_schemas(manifests: &Manifests) -> Result<()> {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(&manifests.files)
        .output()
        .context("running python3")?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if said.contains("No module named kubernetes_validate") {
        bail!("kubernetes-validate is not installed: python3 -m pip install kubernetes-validate (.ci/run does)");
    }
    ensure!(out.status.success(), "the Kubernetes manifests do not validate:\n{said}");
    Ok(())
}

/// The pod template's parts the checks and the Docker run use.
pub struct Pods {
    statefulset: String,
    service: String,
    replicas: u64,
    container: Value,
    pod_security: Value,
    volumes: Value,
    claims: Vec<String>,
    configmap: BTreeMap<String, String>,
    /// The proxy DaemonSet's name, its pods' container, securityContext
    /// and volumes.
    proxy: Option<(String, Value, Value, Value)>,
}

/// What the schemas cannot check (see the module's doc).
pub fn check_consistency(manifests: &Manifests) -> Result<Pods> {
    let sts = manifests.one("StatefulSet")?;
    let spec = &sts["spec"];
    let template = &spec["template"];
    let pod_labels = template["metadata"]["labels"].as_mapping().context("the pod template has no labels")?;
    let selects_pods = |selector: &Value, what: &str| -> Result<()> {
        let selector = selector.as_mapping().with_context(|| format!("{what} has no selector"))?;
        ensure!(!selector.is_empty(), "{what} selects everything");
        for (key, value) in selector {
            ensure!(pod_labels.get(key) == Some(value), "{what} selects {key:?}={value:?}, which the pods lack");
        }
        Ok(())
    };
    selects_pods(&spec["selector"]["matchLabels"], "the StatefulSet")?;

    let service = spec["serviceName"].as_str().context("the StatefulSet has no serviceName")?;
    let headless = manifests
        .of_kind("Service")
        .find(|s| s["metadata"]["name"] == service)
        .with_context(|| format!("no Service {service}, the StatefulSet's serviceName"))?;
    ensure!(headless["spec"]["clusterIP"] == "None", "Service {service} is not headless");
    ensure!(
        headless["spec"]["publishNotReadyAddresses"] == true,
        "Service {service} must publish pods before they are ready: members need each other's names to become ready"
    );
    ensure!(
        spec["podManagementPolicy"] == "Parallel",
        "podManagementPolicy must be Parallel: with OrderedReady the first pod waits for a quorum that never starts"
    );
    // The proxy's Services are check_proxy's; a Service selecting proxies and
    // members alike fails there.
    let proxy_labels = manifests.of_kind("DaemonSet").next().map(|ds| &ds["spec"]["template"]["metadata"]["labels"]);
    for svc in manifests.of_kind("Service") {
        let name = svc["metadata"]["name"].as_str().unwrap_or("?");
        let selector = &svc["spec"]["selector"];
        if proxy_labels.is_some_and(|labels| selects(selector, labels)) {
            continue;
        }
        selects_pods(selector, &format!("Service {name}"))?;
    }
    selects_pods(&manifests.one("PodDisruptionBudget")?["spec"]["selector"]["matchLabels"], "the PodDisruptionBudget")?;

    let containers = template["spec"]["containers"].as_sequence().context("the pod template has no containers")?;
    ensure!(containers.len() == 1, "the pod template should have one container, keel");
    let container = &containers[0];
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
        let get = &container[probe]["httpGet"];
        ensure!(get["path"] == path, "the {probe} should ask {path}, not {:?}", get["path"]);
        container_port(container, &get["port"]).with_context(|| format!("the {probe}'s port"))?;
    }

    let configmap_name = container["envFrom"][0]["configMapRef"]["name"].as_str();
    let configmap = match configmap_name {
        None => BTreeMap::new(),
        Some(name) => {
            let map = manifests
                .of_kind("ConfigMap")
                .find(|m| m["metadata"]["name"] == name)
                .with_context(|| format!("no ConfigMap {name}, which the pods read"))?;
            serde_yaml::from_value(map["data"].clone()).context("the ConfigMap's data")?
        }
    };
    let claims = spec["volumeClaimTemplates"]
        .as_sequence()
        .map(|claims| claims.iter().filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok(Pods {
        statefulset: sts["metadata"]["name"].as_str().context("the StatefulSet has no name")?.to_owned(),
        service: service.to_owned(),
        replicas: spec["replicas"].as_u64().unwrap_or(1),
        container: container.clone(),
        pod_security: template["spec"]["securityContext"].clone(),
        volumes: template["spec"]["volumes"].clone(),
        claims,
        configmap,
        proxy: manifests.of_kind("DaemonSet").next().map(|ds| {
            let name = ds["metadata"]["name"].as_str().unwrap_or("proxy").to_owned();
            let spec = &ds["spec"]["template"]["spec"];
            (name, spec["containers"][0].clone(), spec["securityContext"].clone(), spec["volumes"].clone())
        }),
    })
}

/// Whether `selector` (matchLabels, or a Service's selector) is non-empty
/// and selects pods labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let (Some(selector), Some(labels)) = (selector.as_mapping(), labels.as_mapping()) else { return false };
    !selector.is_empty() && selector.iter().all(|(key, value)| labels.get(key) == Some(value))
}

/// Step 3 of the module's doc: the proxy DaemonSet and its Service. Returns
/// the proxy's flags (the args after `grpc-proxy start`, `$(VAR)` expanded
/// as the pod would see them), which keel itself must accept.
pub fn check_proxy(manifests: &Manifests) -> Result<Vec<String>> {
    let sts = manifests.one("StatefulSet")?;
    let ds = manifests.one("DaemonSet")?;
    let member_labels = &sts["spec"]["template"]["metadata"]["labels"];
    let proxy_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let ds_selector = &ds["spec"]["selector"]["matchLabels"];
    ensure!(selects(ds_selector, proxy_labels), "the DaemonSet does not select its own pods");
    ensure!(!selects(ds_selector, member_labels), "the DaemonSet's selector takes the members' pods too");

    // Whatever selects members must not take a proxy: the client Service
    // would send etcdctl to proxies, the PodDisruptionBudget count them.
    let mut member_selectors = vec![("the StatefulSet".to_owned(), &sts["spec"]["selector"]["matchLabels"])];
    for pdb in manifests.of_kind("PodDisruptionBudget") {
        member_selectors.push(("the PodDisruptionBudget".to_owned(), &pdb["spec"]["selector"]["matchLabels"]));
    }
    let mut proxy_service = None;
    for svc in manifests.of_kind("Service") {
        let name = svc["metadata"]["name"].as_str().unwrap_or("?");
        let selector = &svc["spec"]["selector"];
        if selects(selector, proxy_labels) {
            ensure!(!selects(selector, member_labels), "Service {name} selects proxies and members alike");
            ensure!(proxy_service.is_none(), "more than one Service selects the proxies");
            proxy_service = Some(svc);
        } else {
            member_selectors.push((format!("Service {name}"), selector));
        }
    }
    for (what, selector) in member_selectors {
        ensure!(!selects(selector, proxy_labels), "{what} selects the proxy pods too");
    }
    let service = proxy_service.context("no Service selects the proxy pods")?;
    let service_name = service["metadata"]["name"].as_str().unwrap_or("?");
    ensure!(
        service["spec"]["internalTrafficPolicy"] == "Local",
        "Service {service_name} must have internalTrafficPolicy: Local, so pods reach their own node's proxy"
    );

    let containers =
        ds["spec"]["template"]["spec"]["containers"].as_sequence().context("the DaemonSet has no containers")?;
    ensure!(containers.len() == 1, "the DaemonSet's pods should have one container, the proxy");
    let proxy = &containers[0];
    let member = &sts["spec"]["template"]["spec"]["containers"][0];
    ensure!(member.is_mapping(), "the StatefulSet has no container");
    ensure!(
        proxy["image"].is_string() && proxy["image"] == member["image"],
        "the proxy runs image {:?}, the members {:?}: one image, which the kustomization's `images` sets for both",
        proxy["image"],
        member["image"]
    );
    ensure!(proxy["command"].is_null(), "the proxy's command is set: the image's entrypoint (keel) is expected");
    let pod_security = &ds["spec"]["template"]["spec"]["securityContext"];
    ensure!(pod_security["runAsNonRoot"] == true, "the proxy pods must run as non-root (runAsNonRoot: true)");
    let member_pod_security = &sts["spec"]["template"]["spec"]["securityContext"];
    for key in ["runAsUser", "runAsGroup", "seccompProfile"] {
        ensure!(pod_security[key] == member_pod_security[key], "the proxy pods' {key} differs from the members'");
    }
    ensure!(
        proxy["securityContext"] == member["securityContext"],
        "the proxy's container securityContext differs from the members': {:?}",
        proxy["securityContext"]
    );
    for resource in ["cpu", "memory"] {
        ensure!(!proxy["resources"]["requests"][resource].is_null(), "the proxy requests no {resource}");
    }

    let mut env = BTreeMap::new();
    for var in proxy["env"].as_sequence().into_iter().flatten() {
        let name = var["name"].as_str().context("an env entry without a name")?.to_owned();
        let value = match (&var["value"], var["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Value::String(value), _) => expand(value, &env),
            (_, Some("metadata.name")) => format!("{}-x7k2p", ds["metadata"]["name"].as_str().unwrap_or("proxy")),
            (_, Some("metadata.namespace")) => NAMESPACE.to_owned(),
            (_, Some(field)) => bail!("env {name}: fieldRef {field} is not expected of the proxy"),
            _ => bail!("env {name}: only values and field references are expected of the proxy"),
        };
        env.insert(name, value);
    }
    let args = proxy["args"]
        .as_sequence()
        .context("the proxy has no args")?
        .iter()
        .map(|arg| Ok(expand(arg.as_str().context("a non-string arg")?, &env)))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        args.len() >= 2 && args[0] == "grpc-proxy" && args[1] == "start",
        "the proxy's args must start with grpc-proxy, start (the image runs keel): {args:?}"
    );
    let flags = args[2..].to_vec();
    let values = |name: &str| -> Vec<&str> {
        let prefix = format!("--{name}=");
        flags.iter().filter_map(|flag| flag.strip_prefix(&prefix)).collect()
    };

    let endpoints: Vec<&str> = values("endpoints").into_iter().flat_map(|list| list.split(',')).collect();
    ensure!(!endpoints.is_empty(), "the proxy has no --endpoints (its default is 127.0.0.1:2379, itself)");
    for endpoint in endpoints {
        names_a_member(manifests, sts, endpoint).with_context(|| format!("the proxy's endpoint {endpoint}"))?;
    }

    let listen = values("listen-addr").pop().context("the proxy has no --listen-addr (its default is loopback)")?;
    let (host, port) = host_port(listen).with_context(|| format!("--listen-addr={listen}"))?;
    ensure!(
        !matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "--listen-addr={listen}: the Service cannot reach a proxy listening on its pod's loopback"
    );
    let listen_port = container_port(proxy, &Value::from(port)).context("--listen-addr's port")?;
    let mut targets = service["spec"]["ports"].as_sequence().into_iter().flatten().map(|p| {
        let target = if p["targetPort"].is_null() { &p["port"] } else { &p["targetPort"] };
        container_port(proxy, target).ok()
    });
    ensure!(
        targets.any(|target| target == Some(listen_port)),
        "Service {service_name} does not forward to the proxy's --listen-addr port {listen_port}"
    );

    let mut probe_ports = vec![listen_port];
    if let Some(metrics) = values("metrics-addr").pop() {
        let (_, port) = host_port(metrics.trim_start_matches("http://")).context("--metrics-addr")?;
        probe_ports.push(container_port(proxy, &Value::from(port)).context("--metrics-addr's port")?);
    }
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
        let get = &proxy[probe]["httpGet"];
        ensure!(get["path"] == path, "the proxy's {probe} should ask {path}, not {:?}", get["path"]);
        let port = container_port(proxy, &get["port"]).with_context(|| format!("the proxy's {probe}'s port"))?;
        ensure!(
            probe_ports.contains(&port),
            "the proxy's {probe} asks port {port}, where the proxy serves no HTTP (it does on {probe_ports:?})"
        );
    }
    Ok(flags)
}

/// `host:port`, the port a number.
fn host_port(addr: &str) -> Result<(&str, u64)> {
    let (host, port) = addr.rsplit_once(':').context("no port")?;
    Ok((host, port.parse().context("the port is not a number")?))
}

/// Whether the proxy endpoint `endpoint` is a member's client port: a pod's
/// stable name (`keel-0.keel-peer`, with `.<namespace>.svc[.cluster.local]`
/// or without), or a Service selecting the members, on a port it forwards
/// to the members' client port.
fn names_a_member(manifests: &Manifests, sts: &Value, endpoint: &str) -> Result<()> {
    let member = &sts["spec"]["template"]["spec"]["containers"][0];
    let client = container_port(member, &Value::from("client"))?;
    let (host, port) = host_port(endpoint.trim_start_matches("http://"))?;
    let mut labels: Vec<&str> = host.split('.').collect();
    if labels.ends_with(&["cluster", "local"]) {
        labels.truncate(labels.len() - 2);
    }
    if labels.len() >= 3 && labels.last() == Some(&"svc") {
        labels.truncate(labels.len() - 2);
    }
    match labels[..] {
        [pod, service] => {
            ensure!(sts["spec"]["serviceName"] == service, "{service} is not the StatefulSet's Service");
            let name = sts["metadata"]["name"].as_str().unwrap_or_default();
            let ordinal: u64 = pod
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("{pod} is not a pod of StatefulSet {name}"))?;
            let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
            ensure!(ordinal < replicas, "{pod}: the StatefulSet has {replicas} replicas");
            ensure!(u64::from(client) == port, "port {port} is not the members' client port {client}");
        }
        [service] => {
            let svc = manifests
                .of_kind("Service")
                .find(|s| s["metadata"]["name"] == service)
                .with_context(|| format!("no Service {service}"))?;
            ensure!(
                selects(&svc["spec"]["selector"], &sts["spec"]["template"]["metadata"]["labels"]),
                "Service {service} does not select the members"
            );
            let forwards = svc["spec"]["ports"].as_sequence().into_iter().flatten().any(|p| {
                let target = if p["targetPort"].is_null() { &p["port"] } else { &p["targetPort"] };
                p["port"].as_u64() == Some(port) && container_port(member, target).ok() == Some(client)
            });
            ensure!(forwards, "Service {service} does not forward port {port} to the members' client port");
        }
        _ => bail!("neither a member's name (keel-N.SERVICE) nor a Service's"),
    }
    Ok(())
}

/// The container port a probe's `port` (a name or a number) means.
fn container_port(container: &Value, port: &Value) -> Result<u16> {
    let ports = container["ports"].as_sequence().context("the container declares no ports")?;
    let found = ports.iter().find(|p| match port {
        Value::String(name) => p["name"] == name.as_str(),
        number => &p["containerPort"] == number,
    });
    let number =
        found.and_then(|p| p["containerPort"].as_u64()).with_context(|| format!("no container port {port:?}"))?;
    Ok(u16::try_from(number)?)
}

/// Step 4 of the module's doc.
pub fn pods_run_in_docker(docker: &Docker, image: &str, pods: &mut Pods) -> Result<()> {
    let network = docker.name("kubernetes");
    docker.run(&["network", "create", "--label", &docker.label(), &network])?;
    let mut started = Vec::new();
    for ordinal in 0..pods.replicas {
        started.push(start_pod(docker, image, pods, &network, ordinal)?);
    }
    for pod in &started {
        wait_probes(docker, pods, pod)?;
    }
    let client = |pod: &str| -> Result<String> {
        let port = container_port(&pods.container, &Value::from("client"))?;
        Ok(docker.published(pod, port)?.to_string())
    };
    let all = started.iter().map(|pod| client(pod)).collect::<Result<Vec<_>>>()?.join(",");
    let members = etcdctl(&all, &["member", "list"])?;
    ensure!(
        members.lines().count() as u64 == pods.replicas && members.lines().all(|l| l.contains(", started, ")),
        "member list:\n{members}"
    );
    etcdctl(&all, &["put", "/deploy/kubernetes", "before scaling"])?;
    if let Some(proxy) = &pods.proxy {
        proxy_serves(docker, image, proxy, &network)?;
    }

    // deploy/README.md, "Scaling": member add, then the ConfigMap, then the
    // replica count.
    let ordinal = pods.replicas;
    let name = format!("{}-{ordinal}", pods.statefulset);
    let peer_url = format!("http://{name}.{}:2380", pods.service);
    // Refused with "unhealthy cluster" until every member has been connected
    // for a few seconds (--strict-reconfig-check, etcd's rule): again until then.
    let added = retry_while(Duration::from_secs(30), "unhealthy cluster", || {
        docker.run(&["exec", &started[0], "keelctl", "member", "add", &name, &format!("--peer-urls={peer_url}")])
    })?;
    let initial_cluster = added
        .lines()
        .find_map(|line| line.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .with_context(|| format!("member add printed no ETCD_INITIAL_CLUSTER:\n{added}"))?
        .trim_matches('"');
    pods.configmap.insert("ETCD_INITIAL_CLUSTER".to_owned(), initial_cluster.to_owned());
    pods.configmap.insert("ETCD_INITIAL_CLUSTER_STATE".to_owned(), "existing".to_owned());
    let joined = start_pod(docker, image, pods, &network, ordinal)?;
    wait_probes(docker, pods, &joined)?;
    // Ready means published on the new member; a member asked may apply
    // that entry a heartbeat later (member list is not linearizable in 3.4).
    retry(Duration::from_secs(5), || {
        let members = etcdctl(&all, &["member", "list"])?;
        ensure!(
            members.lines().count() as u64 == pods.replicas + 1 && members.lines().all(|l| l.contains(", started, ")),
            "after scaling, member list:\n{members}"
        );
        Ok(())
    })?;
    let value = retry(Duration::from_secs(20), || {
        etcdctl(&client(&joined)?, &["get", "/deploy/kubernetes", "--print-value-only", "--consistency=s"])
    })?;
    ensure!(value.trim() == "before scaling", "the new member {name} read {value:?}");
    Ok(())
}

/// A pod of the proxy DaemonSet, run like a member's beside the members:
/// it passes its probes, reads the key written to the members, and answers
/// `member list` with the address it advertises.
fn proxy_serves(docker: &Docker, image: &str, proxy: &(String, Value, Value, Value), network: &str) -> Result<()> {
    let (name, container, pod_security, volumes) = proxy;
    let pods = Pods {
        statefulset: name.clone(),
        service: name.clone(),
        replicas: 1,
        container: container.clone(),
        pod_security: pod_security.clone(),
        volumes: volumes.clone(),
        claims: Vec::new(),
        configmap: BTreeMap::new(),
        proxy: None,
    };
    let pod = start_pod(docker, image, &pods, network, 0)?;
    wait_probes(docker, &pods, &pod)?;
    let port = container_port(container, &Value::from("client"))?;
    let through = docker.published(&pod, port)?.to_string();
    let value = etcdctl(&through, &["get", "/deploy/kubernetes", "--print-value-only"])?;
    ensure!(value.trim() == "before scaling", "through the proxy, read {value:?}");
    let members = etcdctl(&through, &["member", "list"])?;
    let advertised = format!("{name}.{NAMESPACE}.svc:23790");
    ensure!(members.contains(&advertised), "member list through the proxy does not name {advertised}:\n{members}");
    Ok(())
}

/// Retries `attempt` while it fails with an error mentioning `transient`.
fn retry_while<T>(within: Duration, transient: &str, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        match attempt() {
            Err(err) if format!("{err:#}").contains(transient) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Starts pod `ordinal` as a container; its name.
fn start_pod(docker: &Docker, image: &str, pods: &Pods, network: &str, ordinal: u64) -> Result<String> {
    let pod = format!("{}-{ordinal}", pods.statefulset);
    let container = docker.name(&pod);
    let c = &pods.container;
    let mut args: Vec<String> =
        ["run", "--detach", "--no-healthcheck", "--name", &container, "--label"].map(str::to_owned).to_vec();
    args.push(docker.label());
    args.extend(["--network".into(), network.to_owned(), "--hostname".into(), pod.clone()]);
    for alias in [format!("{pod}.{}", pods.service), format!("{pod}.{}.{NAMESPACE}.svc", pods.service)] {
        args.extend(["--network-alias".into(), alias]);
    }

    let security = &pods.pod_security;
    if let (Some(uid), Some(gid)) = (security["runAsUser"].as_u64(), security["runAsGroup"].as_u64()) {
        args.extend(["--user".into(), format!("{uid}:{gid}")]);
    }
    if c["securityContext"]["readOnlyRootFilesystem"] == true {
        args.push("--read-only".into());
    }
    if c["securityContext"]["allowPrivilegeEscalation"] == false {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    for cap in c["securityContext"]["capabilities"]["drop"].as_sequence().into_iter().flatten() {
        args.extend(["--cap-drop".into(), cap.as_str().unwrap_or_default().to_owned()]);
    }

    for mount in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let (name, path) =
            (mount["name"].as_str().unwrap_or_default(), mount["mountPath"].as_str().unwrap_or_default());
        if pods.claims.iter().any(|claim| claim == name) {
            // A new volume takes the image's ownership of the directory,
            // as fsGroup gives the pod's user the claim.
            let volume = docker.name(&format!("{name}-{pod}"));
            docker.run(&["volume", "create", "--label", &docker.label(), &volume])?;
            args.extend(["--volume".into(), format!("{volume}:{path}")]);
        } else {
            let volume = pods.volumes.as_sequence().into_iter().flatten().find(|v| v["name"] == name);
            ensure!(
                volume.is_some_and(|v| v["emptyDir"].is_mapping()),
                "volume {name}: only claims and emptyDir are emulated"
            );
            args.extend(["--tmpfs".into(), path.to_owned()]);
        }
    }
    for port in c["ports"].as_sequence().into_iter().flatten() {
        let number = port["containerPort"].as_u64().context("a port without containerPort")?;
        args.extend(["--publish".into(), format!("127.0.0.1::{number}")]);
    }

    let mut env: BTreeMap<String, String> = pods.configmap.clone();
    for var in c["env"].as_sequence().into_iter().flatten() {
        let name = var["name"].as_str().context("an env entry without a name")?.to_owned();
        let value = match (&var["value"], var["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Value::String(value), _) => expand(value, &env),
            (_, Some("metadata.name")) => pod.clone(),
            (_, Some("metadata.namespace")) => NAMESPACE.to_owned(),
            _ => bail!("env {name}: only values and the pod's name and namespace are emulated"),
        };
        env.insert(name, value);
    }
    for (name, value) in &env {
        args.extend(["--env".into(), format!("{name}={value}")]);
    }
    args.push(image.to_owned());
    if let Some(command) = c["command"].as_sequence() {
        bail!("the container's command is {command:?}: the image's entrypoint (keel) is expected");
    }
    for arg in c["args"].as_sequence().into_iter().flatten() {
        args.push(expand(arg.as_str().context("a non-string arg")?, &env));
    }
    docker.run(&args)?;
    Ok(container)
}

/// Kubernetes' `$(VAR)` in args and env values: a defined variable's value;
/// an undefined one stays as written; `$$` is a `$`.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest.strip_prefix("$(").and_then(|r| r.split_once(')')) {
            match env.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[..name.len() + 3]),
            }
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Waits until the pod's startup, liveness and readiness probes all pass
/// (HTTP status 200-399, as the kubelet counts them).
fn wait_probes(docker: &Docker, pods: &Pods, container: &str) -> Result<()> {
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &pods.container[probe]["httpGet"];
        if get.is_null() {
            continue;
        }
        let port = container_port(&pods.container, &get["port"])?;
        let addr: SocketAddr = docker.published(container, port)?;
        let path = get["path"].as_str().unwrap_or("/");
        retry(Duration::from_secs(60), || {
            let (status, body) = http_get(addr, path)?;
            ensure!((200..400).contains(&status), "{probe} {path}: {status} {body}");
            Ok(())
        })
        .with_context(|| format!("{container}'s {probe}\n{}", docker.logs(container)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_as_kubernetes_does() {
        let env = BTreeMap::from([("POD_NAME".to_owned(), "keel-0".to_owned())]);
        assert_eq!(expand("--name=$(POD_NAME)", &env), "--name=keel-0");
        assert_eq!(expand("http://$(POD_NAME).peer:$(PORT)", &env), "http://keel-0.peer:$(PORT)");
        assert_eq!(expand("$$(POD_NAME) $5", &env), "$(POD_NAME) $5");
    }

    #[test]
    fn the_manifests_hang_together() {
        let pods = check_consistency(&Manifests::load().unwrap()).unwrap();
        assert_eq!(pods.replicas, 3);
        assert!(pods.configmap.contains_key("ETCD_INITIAL_CLUSTER"));
    }

    #[test]
    fn the_proxy_hangs_together() {
        let flags = check_proxy(&Manifests::load().unwrap()).unwrap();
        assert!(flags.iter().any(|flag| flag == "--advertise-client-url=keel-proxy.default.svc:23790"), "{flags:?}");
    }

    /// The manifests with `edit` applied to every document of `kind`.
    fn edited(kind: &str, edit: impl Fn(&mut Value)) -> Manifests {
        let manifests = Manifests::load().unwrap();
        let mut docs = manifests.docs.clone();
        docs.iter_mut().filter(|doc| doc["kind"] == kind).for_each(edit);
        Manifests { files: manifests.files, docs }
    }

    fn proxy_container(ds: &mut Value) -> &mut Value {
        &mut ds["spec"]["template"]["spec"]["containers"][0]
    }

    fn set_arg(ds: &mut Value, flag: &str, value: &str) {
        let args = proxy_container(ds)["args"].as_sequence_mut().unwrap();
        let prefix = format!("--{flag}=");
        args.retain(|arg| !arg.as_str().unwrap().starts_with(&prefix));
        args.push(Value::from(format!("{prefix}{value}")));
    }

    #[test]
    fn a_broken_proxy_is_caught() {
        let label = |doc: &mut Value| {
            doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = Value::from("keel");
            doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = Value::from("keel");
        };
        let broken = [
            ("the members' labels", edited("DaemonSet", label)),
            (
                "a cluster-wide Service",
                edited("Service", |svc| {
                    if svc["metadata"]["name"] == "keel-proxy" {
                        svc["spec"]["internalTrafficPolicy"] = Value::from("Cluster");
                    }
                }),
            ),
            ("another image", edited("DaemonSet", |ds| proxy_container(ds)["image"] = Value::from("etcd"))),
            (
                "root",
                edited("DaemonSet", |ds| {
                    ds["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = Value::Bool(false)
                }),
            ),
            ("no requests", edited("DaemonSet", |ds| proxy_container(ds)["resources"] = Value::Null)),
            (
                "a probe path",
                edited("DaemonSet", |ds| {
                    proxy_container(ds)["livenessProbe"]["httpGet"]["path"] = Value::from("/health")
                }),
            ),
            (
                "a probe on the peer port",
                edited("DaemonSet", |ds| {
                    proxy_container(ds)["ports"]
                        .as_sequence_mut()
                        .unwrap()
                        .push(serde_yaml::from_str("{name: peer, containerPort: 2380}").unwrap());
                    proxy_container(ds)["readinessProbe"]["httpGet"]["port"] = Value::from("peer");
                }),
            ),
            (
                "a fourth member",
                edited("DaemonSet", |ds| set_arg(ds, "endpoints", "keel-0.keel-peer:2379,keel-3.keel-peer:2379")),
            ),
            ("the peer port", edited("DaemonSet", |ds| set_arg(ds, "endpoints", "keel-0.keel-peer:2380"))),
            ("a Service of no members", edited("DaemonSet", |ds| set_arg(ds, "endpoints", "keel-proxy:23790"))),
            ("loopback", edited("DaemonSet", |ds| set_arg(ds, "listen-addr", "127.0.0.1:23790"))),
            ("an undeclared port", edited("DaemonSet", |ds| set_arg(ds, "listen-addr", "0.0.0.0:2379"))),
            (
                "not grpc-proxy",
                edited("DaemonSet", |ds| {
                    proxy_container(ds)["args"].as_sequence_mut().unwrap().remove(0);
                }),
            ),
        ];
        for (what, manifests) in broken {
            assert!(check_proxy(&manifests).is_err(), "{what} passed");
        }
        // Endpoints the check must take.
        for endpoints in ["keel:2379", "keel.default.svc:2379,keel-2.keel-peer.default.svc.cluster.local:2379"] {
            let manifests = edited("DaemonSet", |ds| set_arg(ds, "endpoints", endpoints));
            check_proxy(&manifests).unwrap();
        }
    }

    #[test]
    fn a_stray_manifest_is_caught() {
        let manifests = Manifests::load().unwrap();
        let mut docs = manifests.docs.clone();
        for doc in &mut docs {
            if doc["kind"] == "Service" && doc["spec"]["clusterIP"] == "None" {
                doc["spec"]["publishNotReadyAddresses"] = Value::Bool(false);
            }
        }
        let broken = Manifests { files: manifests.files.clone(), docs };
        assert!(check_consistency(&broken).is_err());
    }
}
