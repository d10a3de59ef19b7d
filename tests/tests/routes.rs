//! The routes in the SAM template, the local watcher's router, the OpenAPI
//! document and the function crates are one and the same set.

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
                path.clone(),
                entry["function"].as_str().unwrap().to_string(),
            ));
        }
    }
    routes
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
    assert_eq!(
        without_function,
        openapi(),
        "template vs infra/openapi.yaml"
    );
    assert_eq!(
        template_functions,
        function_crates(),
        "template vs functions/"
    );
    assert_eq!(scheduled, BTreeSet::from(["aggregate-metrics".to_string()]));
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
