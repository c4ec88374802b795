//! The compose demo and the Kubernetes manifests cannot run here, so they are checked
//! statically: they parse, they hold what the demo promises, and every flag, environment
//! variable, mounted file and scrape target they name really exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_serde::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Parses every YAML document of `path`, with `<<` merge keys applied.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            // Merges may nest (an anchor that merges another); apply until none is left.
            for _ in 0..4 {
                value.apply_merge().expect("merge keys apply");
            }
            value
        })
        .collect()
}

use serde::Deserialize as _;

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(str_of).collect())
        .unwrap_or_default()
}

/// What `bimride <subcommand>` reads: its long flags and the environment variables behind them.
#[derive(Debug, Default)]
struct Surface {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn surface(subcommand: &str) -> Surface {
    let output = Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args([subcommand, "--help"])
        .output()
        .expect("bimride runs");
    assert!(
        output.status.success(),
        "bimride {subcommand} --help failed"
    );
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    let mut s = Surface::default();
    for word in help.split_whitespace() {
        if let Some(flag) = word.strip_prefix("--") {
            let flag: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !flag.is_empty() {
                s.flags.insert(flag);
            }
        }
    }
    let mut rest = help.as_str();
    while let Some(at) = rest.find("[env: ") {
        let tail = &rest[at + 6..];
        // `[env: NAME=value]`, or `[env: NAME]` for a secret whose value is hidden.
        let end = tail.find(['=', ']']).expect("env name ends with = or ]");
        s.env.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    assert!(s.env.contains("BIMRIDE_BROKERS"), "{subcommand}: {help}");
    s
}

/// Checks that every `--flag` in `args` after the subcommand is one it accepts.
fn check_flags(context: &str, args: &[String], surfaces: &mut BTreeMap<String, Surface>) {
    let sub = &args[0];
    let known = surfaces.entry(sub.clone()).or_insert_with(|| surface(sub));
    for arg in &args[1..] {
        if let Some(flag) = arg.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap_or(flag);
            assert!(
                known.flags.contains(flag),
                "{context}: `bimride {sub}` has no --{flag}"
            );
        }
    }
}

/// `scripts/kafka.sh` runs the broker every test that matters uses: it must be the compose
/// demo's, in version and in settings.
#[test]
fn scripts_kafka_runs_the_compose_brokers_version_and_settings() {
    let pom = std::fs::read_to_string(root().join("deploy/kafka/pom.xml")).expect("pom");
    let pinned = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("the pom pins kafka.version");
    let compose = documents(&root().join("docker-compose.yml")).remove(0);
    let services = compose["services"].as_mapping().expect("services");
    // Settings that differ by deployment: addresses, identities and the quorum.
    let per_node = [
        "node.id",
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "controller.quorum.voters",
        "log.dirs",
    ];
    let script: BTreeMap<String, String> =
        std::fs::read_to_string(root().join("deploy/kafka/cluster.properties"))
            .expect("cluster.properties")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once('=').expect("key=value");
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
    for n in 1..=3 {
        let kafka = &services[format!("kafka-{n}").as_str()];
        assert_eq!(
            str_of(&kafka["image"]),
            format!("apache/kafka:{pinned}"),
            "kafka-{n} runs the version scripts/kafka.sh pins"
        );
        let env: BTreeMap<String, String> = kafka["environment"]
            .as_mapping()
            .expect("environment")
            .iter()
            .filter_map(|(k, v)| {
                let k = str_of(k);
                let key = k.strip_prefix("KAFKA_")?.to_lowercase().replace('_', ".");
                (!per_node.contains(&key.as_str())).then(|| (key, str_of(v)))
            })
            .collect();
        assert_eq!(
            env, script,
            "docker-compose.yml's kafka-{n} and deploy/kafka/cluster.properties disagree"
        );
    }
}

#[test]
fn the_compose_demo_runs_every_service_on_a_three_broker_cluster_in_order() {
    let compose = documents(&root().join("docker-compose.yml")).remove(0);
    let services = compose["services"].as_mapping().expect("services");
    let service = |name: &str| -> &Value {
        services
            .get(name)
            .unwrap_or_else(|| panic!("no service {name}"))
    };
    let names: BTreeSet<String> = services.keys().map(str_of).collect();

    // Three KRaft brokers from the official image, replicated 3 with min ISR 2.
    for n in 1..=3 {
        let kafka = service(&format!("kafka-{n}"));
        assert!(str_of(&kafka["image"]).starts_with("apache/kafka:"));
        let env = &kafka["environment"];
        assert_eq!(str_of(&env["KAFKA_PROCESS_ROLES"]), "broker,controller");
        assert_eq!(str_of(&env["KAFKA_NODE_ID"]), n.to_string());
        assert_eq!(str_of(&env["KAFKA_DEFAULT_REPLICATION_FACTOR"]), "3");
        assert_eq!(str_of(&env["KAFKA_MIN_INSYNC_REPLICAS"]), "2");
        assert_eq!(
            str_of(&env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
                .split(',')
                .count(),
            3
        );
        assert!(
            kafka["healthcheck"]["test"].is_sequence(),
            "kafka-{n} has a healthcheck"
        );
    }
    assert!(
        str_of(&service("schema-registry")["image"])
            .starts_with("confluentinc/cp-schema-registry:")
    );
    // The ride store's PostgreSQL: healthy before anyone connects, its data on a volume, and
    // its schema brought up by a one-shot migration that the store's readers wait for.
    let postgres = service("postgres");
    assert!(str_of(&postgres["image"]).starts_with("postgres:"));
    assert!(
        strings(&postgres["healthcheck"]["test"])
            .iter()
            .any(|t| t.contains("pg_isready")),
        "postgres has a pg_isready health check"
    );
    let volumes = strings(&postgres["volumes"]);
    let data = volumes
        .iter()
        .find(|v| v.ends_with(":/var/lib/postgresql/data"))
        .expect("postgres keeps its data on a volume");
    let volume = data.split(':').next().expect("volume name");
    assert!(
        compose["volumes"].get(volume).is_some(),
        "the volume {volume} is declared"
    );
    let migrate = service("migrate");
    assert_eq!(strings(&migrate["command"]), ["migrate"]);
    assert_eq!(
        str_of(&migrate["depends_on"]["postgres"]["condition"]),
        "service_healthy"
    );
    for reader in ["api", "store", "dashboard"] {
        assert_eq!(
            str_of(&service(reader)["depends_on"]["migrate"]["condition"]),
            "service_completed_successfully",
            "{reader} waits for the migration"
        );
        assert!(
            service(reader)["environment"]
                .get("BIMRIDE_DATABASE_URL")
                .is_some(),
            "{reader} is given the database"
        );
    }
    assert!(str_of(&service("prometheus")["image"]).starts_with("prom/prometheus:"));
    assert!(str_of(&service("grafana")["image"]).starts_with("grafana/grafana:"));
    assert!(str_of(&service("kafka-ui")["image"]).contains("kafka-ui"));

    // Each BimRide service in its own container of the one image, with its subcommand.
    let expected = [
        ("topics", "provision"),
        ("api", "api"),
        ("dispatch-1", "dispatch"),
        ("dispatch-2", "dispatch"),
        ("surge", "surge"),
        ("billing", "billing"),
        ("notifications", "notifications"),
        ("eta", "eta"),
        ("dashboard", "dashboard"),
        ("simulator", "simulate"),
        ("store", "store"),
    ];
    let mut surfaces = BTreeMap::new();
    for (name, sub) in expected {
        let s = service(name);
        assert_eq!(str_of(&s["image"]), "bimride:latest", "{name}");
        let command = strings(&s["command"]);
        assert_eq!(command.first().map(String::as_str), Some(sub), "{name}");
        check_flags(name, &command, &mut surfaces);
        // Every variable it sets is one its subcommand reads.
        let reads = &surfaces[sub].env;
        for key in s["environment"].as_mapping().expect("environment").keys() {
            let key = str_of(key);
            assert!(
                reads.contains(&key),
                "{name} sets {key}, which `bimride {sub}` never reads"
            );
        }
        // It starts after the topics exist and the registry answers; the topics job after
        // the brokers are healthy.
        let deps = s["depends_on"].as_mapping().expect("depends_on");
        for (dep, cond) in deps {
            let condition = str_of(&cond["condition"]);
            assert!(
                condition == "service_healthy" || condition == "service_completed_successfully",
                "{name} waits for {dep:?} only to start"
            );
            let dep = str_of(dep);
            assert!(names.contains(&dep), "{name} depends on a missing {dep}");
            if condition == "service_healthy" {
                assert!(
                    !service(&dep)["healthcheck"].is_null(),
                    "{dep} has no healthcheck"
                );
            }
        }
        if name == "topics" {
            assert!(
                deps.keys().map(str_of).all(|d| d.starts_with("kafka-")),
                "{deps:?}"
            );
        } else {
            assert_eq!(
                str_of(&deps["topics"]["condition"]),
                "service_completed_successfully",
                "{name}"
            );
            assert!(!s["healthcheck"].is_null(), "{name} has no healthcheck");
        }
    }
    assert_eq!(
        str_of(&service("simulator")["depends_on"]["api"]["condition"]),
        "service_healthy"
    );

    // Published ports: as the README lists them.
    let ports: BTreeMap<String, Vec<String>> = names
        .iter()
        .map(|n| (n.clone(), strings(&service(n)["ports"])))
        .collect();
    for (name, port) in [
        ("api", "8080:8080"),
        ("dashboard", "8090:8090"),
        ("schema-registry", "8081:8081"),
        ("prometheus", "9090:9090"),
        ("grafana", "3000:3000"),
        ("kafka-ui", "8085:8080"),
        ("kafka-1", "19092:19092"),
    ] {
        assert!(
            ports[name].contains(&port.to_owned()),
            "{name} publishes {:?}",
            ports[name]
        );
        let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
        let host_port = port.split(':').next().expect("port");
        assert!(
            readme.contains(&format!("localhost:{host_port}")),
            "the README does not list localhost:{host_port} ({name})"
        );
    }

    // Every mounted file exists.
    for name in &names {
        for volume in strings(&service(name)["volumes"]) {
            let source = volume.split(':').next().expect("source");
            if source.starts_with("./") {
                assert!(
                    root().join(source).exists(),
                    "{name} mounts a missing {source}"
                );
            }
        }
    }

    // Prometheus scrapes exactly the BimRide services, by compose name and port.
    let prometheus = documents(&root().join("deploy/prometheus/prometheus.yml")).remove(0);
    let mut targets = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_sequence().expect("jobs") {
        for config in job["static_configs"].as_sequence().expect("static configs") {
            targets.extend(strings(&config["targets"]));
        }
    }
    let mut scraped = BTreeSet::new();
    for target in &targets {
        let (host, port) = target.split_once(':').expect("host:port");
        let s = service(host);
        let env = &s["environment"];
        let listens = [
            env["BIMRIDE_HTTP"].clone(),
            env["BIMRIDE_METRICS_LISTEN"].clone(),
        ]
        .iter()
        .filter(|v| !v.is_null())
        .map(str_of)
        .any(|addr| addr.ends_with(&format!(":{port}")));
        assert!(
            listens,
            "prometheus scrapes {target}, where nothing serves /metrics"
        );
        scraped.insert(host.to_owned());
    }
    let bimride: BTreeSet<String> = expected
        .iter()
        .filter(|(name, _)| *name != "topics")
        .map(|(n, _)| (*n).to_owned())
        .collect();
    assert_eq!(
        scraped, bimride,
        "every long-running BimRide service is scraped"
    );
}

#[test]
fn the_dockerfile_builds_one_slim_non_root_image_for_every_subcommand() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].contains("rust:") && stages[0].contains(" AS build"));
    assert!(stages[1].contains("-slim"), "{}", stages[1]);
    assert!(dockerfile.contains("cargo build --release --locked -p bimride"));
    assert!(dockerfile.contains("COPY --from=build"));
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/bimride"]"#));
}

#[test]
fn the_kubernetes_base_runs_the_services_against_an_existing_cluster() {
    let base = root().join("deploy/k8s/base");
    let kustomization = documents(&base.join("kustomization.yaml")).remove(0);
    let resources = strings(&kustomization["resources"]);
    let files: BTreeSet<String> = std::fs::read_dir(&base)
        .expect("base")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    assert_eq!(
        resources.iter().cloned().collect::<BTreeSet<_>>(),
        files,
        "kustomization lists every manifest"
    );

    let docs: Vec<Value> = resources
        .iter()
        .flat_map(|f| documents(&base.join(f)))
        .collect();
    let of_kind = |kind: &str| -> Vec<&Value> {
        docs.iter().filter(|d| str_of(&d["kind"]) == kind).collect()
    };
    let config = of_kind("ConfigMap")[0]["data"]
        .as_mapping()
        .expect("data")
        .clone();
    let config_keys: BTreeSet<String> = config.keys().map(str_of).collect();
    let partitions: u64 = str_of(&config["BIMRIDE_PARTITIONS"])
        .parse()
        .expect("partitions");

    let mut surfaces = BTreeMap::new();
    let mut workloads = BTreeMap::new();
    let mut config_readers = BTreeSet::new();
    for doc in of_kind("Deployment")
        .into_iter()
        .chain(of_kind("StatefulSet"))
        .chain(of_kind("Job"))
    {
        let name = str_of(&doc["metadata"]["name"]);
        let kind = str_of(&doc["kind"]);
        let pod = &doc["spec"]["template"];
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"],
            Value::Bool(true),
            "{name}"
        );
        for container in pod["spec"]["containers"].as_sequence().expect("containers") {
            assert_eq!(str_of(&container["image"]), "bimride", "{name}");
            let args = strings(&container["args"]);
            check_flags(&name, &args, &mut surfaces);
            let reads = &surfaces[&args[0]].env;
            for env in container["env"].as_sequence().into_iter().flatten() {
                let key = str_of(&env["name"]);
                assert!(
                    reads.contains(&key),
                    "{name} sets {key}, which `bimride {}` never reads",
                    args[0]
                );
            }
            if container["envFrom"].is_sequence() {
                config_readers.extend(reads.iter().cloned());
            }
            let resources = &container["resources"];
            for side in ["requests", "limits"] {
                for what in ["cpu", "memory"] {
                    assert!(!resources[side][what].is_null(), "{name}: no {side}.{what}");
                }
            }
            if kind != "Job" {
                for probe in ["readinessProbe", "livenessProbe"] {
                    assert!(
                        !container[probe]["httpGet"]["path"].is_null(),
                        "{name}: no {probe}"
                    );
                }
            }
        }
        let labels = pod["metadata"]["labels"].clone();
        workloads.insert(name, (args_of(pod), labels));
    }
    for key in &config_keys {
        assert!(
            config_readers.contains(key),
            "the ConfigMap sets {key}, which nothing reads"
        );
    }
    let subcommands: BTreeSet<String> = workloads.values().map(|(a, _)| a.clone()).collect();
    for sub in [
        "provision",
        "api",
        "dispatch",
        "surge",
        "billing",
        "notifications",
        "eta",
        "dashboard",
        "store",
    ] {
        assert!(
            subcommands.contains(sub),
            "no workload runs `bimride {sub}`"
        );
    }

    // The dispatch autoscaler stops at the partition count: more instances would idle.
    let hpa = of_kind("HorizontalPodAutoscaler");
    assert_eq!(hpa.len(), 1);
    assert_eq!(
        str_of(&hpa[0]["spec"]["scaleTargetRef"]["name"]),
        "bimride-dispatch"
    );
    assert_eq!(hpa[0]["spec"]["maxReplicas"].as_u64(), Some(partitions));

    // Each disruption budget selects a real workload.
    let budgets = of_kind("PodDisruptionBudget");
    assert!(!budgets.is_empty());
    for pdb in budgets {
        let selector = &pdb["spec"]["selector"]["matchLabels"];
        assert!(
            workloads.values().any(|(_, labels)| {
                selector
                    .as_mapping()
                    .expect("matchLabels")
                    .iter()
                    .all(|(k, v)| labels[k.as_str().expect("key")] == *v)
            }),
            "{} selects no workload",
            str_of(&pdb["metadata"]["name"])
        );
    }
}

fn args_of(pod: &Value) -> String {
    strings(&pod["spec"]["containers"][0]["args"])
        .first()
        .cloned()
        .expect("a subcommand")
}
