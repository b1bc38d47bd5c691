fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}
#[test]
fn js() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("src/schemas/kustomization-v1-spec.json").unwrap()).unwrap();
    for (k, p) in v["properties"].as_object().unwrap() {
        let r0 = rss();
        let val = jsonschema::validator_for(p).unwrap();
        let d = rss() - r0;
        if d > 500 {
            println!("{k}: {d} KiB {}", serde_json::to_string(p).unwrap().chars().take(300).collect::<String>());
        }
        drop(val);
    }
}
