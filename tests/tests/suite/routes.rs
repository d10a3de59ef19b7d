//! The routes in the SAM template, the local watcher's router, the OpenAPI
//! document and the function crates are one and the same set.
//!
//! Greedy routes are spelt three ways: API Gateway's `/dashboard/{asset+}`
//! (template), matchit's `/dashboard/{*asset}` (the watcher), and, in the
//! OpenAPI document, one path per file the route serves (an OpenAPI path
//! parameter cannot span segments).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml_ng::Value as Yaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

type Routes = BTreeSet<(String, String, String)>; // (METHOD, path, function)

fn template() -> (Routes, BTreeSet<String>, BTreeSet<String>) {
    let doc = yaml("infra/template.yaml");
    let mut routes = Routes::new();
    let mut functions = BTreeSet::new();
    let mut scheduled = BTreeSet::new();
    for (_, resource) in doc["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap()
            .to_string();
        functions.insert(binary.clone());
        for (_, event) in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            match event["Type"].as_str() {
                Some("HttpApi") => {
                    let p = &event["Properties"];
                    routes.insert((
                        p["Method"].as_str().unwrap().to_uppercase(),
                        p["Path"].as_str().unwrap().to_string(),
                        binary.clone(),
                    ));
                }
                Some("ScheduleV2") => {
                    scheduled.insert(binary.clone());
                }
                other => panic!("unexpected event type {other:?} on {binary}"),
            }
        }
    }
    (routes, functions, scheduled)
}

fn watcher() -> Routes {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let router = doc["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .unwrap();
    let mut routes = Routes::new();
    for (path, entries) in router {
        for entry in entries.as_array().unwrap() {
            routes.insert((
                entry["method"].as_str().unwrap().to_uppercase(),
                api_gateway_path(path),
                entry["function"].as_str().unwrap().to_string(),
            ));
        }
    }
    routes
}

/// The watcher's catch-all `{*name}` written as API Gateway's greedy `{name+}`.
fn api_gateway_path(path: &str) -> String {
    match path.rsplit_once("/{*") {
        Some((prefix, rest)) => format!("{prefix}/{{{}+}}", rest.trim_end_matches('}')),
        None => path.to_string(),
    }
}

/// The prefix a greedy route (`/dashboard/{asset+}`) covers (`/dashboard/`).
fn greedy_prefix(path: &str) -> Option<&str> {
    path.ends_with("+}")
        .then(|| path.rfind('{').map(|i| &path[..i]))
        .flatten()
}

/// The template route an OpenAPI operation is served by: the same path, or
/// a greedy route whose prefix it extends by at least one character.
fn served_by<'a>(
    routes: &'a BTreeSet<(String, String)>,
    method: &str,
    path: &str,
) -> Vec<&'a (String, String)> {
    routes
        .iter()
        .filter(|(m, p)| {
            m == method
                && (p == path
                    || greedy_prefix(p).is_some_and(|prefix| {
                        path.len() > prefix.len() && path.starts_with(prefix)
                    }))
        })
        .collect()
}

fn openapi() -> BTreeSet<(String, String)> {
    let doc = yaml("infra/openapi.yaml");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if ["get", "post", "put", "delete", "patch"].contains(&method) {
                routes.insert((method.to_uppercase(), path.as_str().unwrap().to_string()));
            }
        }
    }
    routes
}

fn function_crates() -> BTreeSet<String> {
    std::fs::read_dir(root().join("functions"))
        .unwrap()
        .map(|e| {
            let manifest = e.unwrap().path().join("Cargo.toml");
            let doc: toml::Table = std::fs::read_to_string(manifest).unwrap().parse().unwrap();
            doc["package"]["name"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn template_watcher_openapi_and_crates_agree() {
    let (template_routes, template_functions, scheduled) = template();
    assert_eq!(
        template_routes,
        watcher(),
        "template vs [workspace.metadata.lambda.watch.router]"
    );
    let without_function: BTreeSet<(String, String)> = template_routes
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    let documented = openapi();
    for (method, path) in &documented {
        let routes = served_by(&without_function, method, path);
        assert_eq!(
            routes.len(),
            1,
            "{method} {path} in infra/openapi.yaml is served by {routes:?} in the template"
        );
    }
    for (method, path) in &without_function {
        assert!(
            documented.iter().any(|(m, p)| served_by(
                &BTreeSet::from([(method.clone(), path.clone())]),
                m,
                p
            )
            .len()
                == 1),
            "{method} {path} of the template is not in infra/openapi.yaml"
        );
    }
    assert_eq!(
        template_functions,
        function_crates(),
        "template vs functions/"
    );
    assert_eq!(
        scheduled,
        BTreeSet::from([
            "aggregate-metrics".to_string(),
            "evaluate-alerts".to_string()
        ])
    );
    // every function crate is either routed or scheduled
    let routed: BTreeSet<String> = template_routes.iter().map(|(_, _, f)| f.clone()).collect();
    assert_eq!(&routed | &scheduled, function_crates());
}

#[test]
fn workspace_members_include_every_function() {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let members: BTreeSet<String> = doc["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str()?.strip_prefix("functions/").map(str::to_string))
        .collect();
    assert_eq!(members, function_crates());
}

#[test]
fn greedy_routes_are_spelt_for_each_router() {
    assert_eq!(
        api_gateway_path("/dashboard/{*asset}"),
        "/dashboard/{asset+}"
    );
    assert_eq!(api_gateway_path("/metrics"), "/metrics");
    assert_eq!(greedy_prefix("/dashboard/{asset+}"), Some("/dashboard/"));
    assert_eq!(greedy_prefix("/proxy/metrics/{proxyId}/daily"), None);
}

#[test]
fn openapi_documents_exactly_the_dashboard_files_served() {
    let documented: BTreeSet<String> = openapi()
        .into_iter()
        .filter(|(m, p)| m == "GET" && p.starts_with("/dashboard"))
        .map(|(_, p)| p)
        .collect();
    let served: BTreeSet<String> = proxy_metrics::handlers::DASHBOARD_ASSETS
        .iter()
        .map(|a| {
            if a.path.is_empty() {
                "/dashboard".to_string()
            } else {
                format!("/dashboard/{}", a.path)
            }
        })
        .collect();
    assert_eq!(documented, served);
    // and the dashboard is the one public operation
    let doc = yaml("infra/openapi.yaml");
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        let path = path.as_str().unwrap();
        let security = &item["get"]["security"];
        if path.starts_with("/dashboard") {
            assert_eq!(security.as_sequence().map(Vec::len), Some(0), "{path}");
        } else {
            assert!(security.is_null(), "{path} overrides the global security");
        }
    }
}

#[test]
fn each_function_enables_only_the_features_it_needs() {
    // shared/'s optional features keep each bootstrap free of code it never
    // runs (binary size, cold start): the aggregation needs none (no HTTP, no
    // JWT), the API functions `http`, and each export its own encoder.
    let expected = |name: &str| -> BTreeSet<&str> {
        match name {
            "aggregate-metrics" => BTreeSet::new(),
            "get-daily-range" => BTreeSet::from(["csv"]),
            "get-prometheus-metrics" => BTreeSet::from(["prometheus"]),
            "get-dashboard" => BTreeSet::from(["dashboard"]),
            "evaluate-alerts" => BTreeSet::from(["alerts"]),
            "test-alert" => BTreeSet::from(["http", "alerts"]),
            "export-otlp-metrics" | "export-otlp-token-metrics" => BTreeSet::from(["otlp"]),
            _ => BTreeSet::from(["http"]),
        }
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("functions")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let doc: toml::Table = std::fs::read_to_string(manifest).unwrap().parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap();
        let features: BTreeSet<&str> = doc["dependencies"]["proxy-metrics"]
            .get("features")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .collect();
        assert_eq!(
            features,
            expected(name),
            "features of proxy-metrics in {name}"
        );
        seen += 1;
    }
    assert!(seen >= 10, "{seen} function crates");
}

#[test]
fn jwt_settings_reach_only_the_functions_that_check_tokens() {
    const JWT: [&str; 4] = ["JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_JWKS_URL"];
    let doc = yaml("infra/template.yaml");
    let global = &doc["Globals"]["Function"]["Environment"]["Variables"];
    for name in JWT {
        assert!(
            global.get(name).is_none(),
            "{name} is global in the template"
        );
    }
    let mut checked = 0;
    for (_, resource) in doc["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap();
        // A function checks tokens when it builds the App (the authenticator).
        let main = std::fs::read_to_string(root().join(format!("functions/{binary}/src/main.rs")))
            .unwrap();
        let checks_tokens = main.contains("App::from_env");
        let vars = &resource["Properties"]["Environment"]["Variables"];
        let given: Vec<&str> = JWT.into_iter().filter(|n| vars.get(n).is_some()).collect();
        if checks_tokens {
            assert_eq!(given, JWT, "{binary} checks tokens");
        } else {
            assert!(
                given.is_empty(),
                "{binary} checks no token but gets {given:?}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} functions");
}

/// Every function runs on a current-thread tokio runtime: a Lambda handles
/// one request at a time, the second thread's start-up is cold-start time,
/// and under the local watcher a multi-threaded function intermittently lost
/// responses over 8 KB (e2e: `large_responses_arrive_whole_every_time`).
#[test]
fn every_function_runs_on_a_current_thread_runtime() {
    let crates = function_crates();
    assert!(crates.len() >= 10, "{crates:?}");
    for name in crates {
        let main =
            std::fs::read_to_string(root().join(format!("functions/{name}/src/main.rs"))).unwrap();
        assert!(
            main.contains("#[tokio::main(flavor = \"current_thread\")]"),
            "functions/{name}/src/main.rs does not start a current-thread runtime"
        );
    }
}

/// The local stack gives each function the settings the template gives it
/// (a function that needs one it lacks fails locally as it would deployed),
/// its documented alerts key, and `ALLOW_LOOPBACK_WEBHOOKS`, which the
/// template never sets.
#[test]
fn local_stack_passes_each_function_the_templates_settings() {
    assert_eq!(
        local_stack::LOCAL_ALERTS_SECRET_KEY,
        proxy_metrics::alerts::secret::LOCAL_SECRET_KEY
    );
    let doc = yaml("infra/template.yaml");
    let text = std::fs::read_to_string(root().join("infra/template.yaml")).unwrap();
    assert!(!text.contains("ALLOW_LOOPBACK_WEBHOOKS"));
    let mut checked = BTreeSet::new();
    for (_, resource) in doc["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap();
        let vars = &resource["Properties"]["Environment"]["Variables"];
        for name in ["JWT_SECRET", "JWT_ISSUER", "ALERTS_SECRET_KEY"] {
            assert_eq!(
                local_stack::function_gets(binary, name),
                vars.get(name).is_some(),
                "{binary}: {name}"
            );
        }
        assert_eq!(
            local_stack::function_gets(binary, "ALLOW_LOOPBACK_WEBHOOKS"),
            vars.get("ALERTS_SECRET_KEY").is_some(),
            "{binary}: the functions that send or check webhooks"
        );
        assert!(local_stack::function_gets(binary, "TABLE_NAME"));
        checked.insert(binary.to_string());
    }
    assert_eq!(checked, function_crates());
}
