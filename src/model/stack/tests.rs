use super::*;

fn no_base(_: &str) -> Result<Stack, StackError> {
    unreachable!("no extends in these tests")
}

const HEAD: &str = "name: t\ncluster: {kubernetes: \"1.36\", channel: 1.36/stable}\ncomponents:\n";

#[test]
fn orders_by_needs_and_computes_waves() {
    let text = format!(
        "{HEAD}  - {{name: c, needs: [b], source: {{addon: x}}}}\n  - {{name: a, source: {{addon: y}}}}\n  - {{name: b, needs: [a], source: {{addon: z}}}}\n"
    );
    let s = parse("t.yaml", &text, &no_base, 0).unwrap();
    let names: Vec<_> = s.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(s.waves()["c"], 2);
}

#[test]
fn this_build_stands_for_its_version_and_published_image() {
    let text = format!(
        "{HEAD}  - {{name: e, version: \"@self\", source: {{addon: x}}, images: {{engine: \"@self\", other: nginx:1.29}}}}\n"
    );
    let s = parse("t.yaml", &text, &no_base, 0).unwrap();
    let build = crate::model::engine_image::BuildInfo::current();
    let e = s.component("e").unwrap();
    assert_eq!(e.version.as_deref(), Some(build.version.as_str()));
    assert_eq!(e.images["engine"], build.published_image());
    assert_eq!(e.images["other"], "nginx:1.29");
}

#[test]
fn provider_limited_components_leave_with_the_other_provider() {
    let text = format!(
        "{HEAD}  - {{name: a, source: {{addon: x}}}}\n  - {{name: b, needs: [a], providers: [multipass], source: {{addon: y}}}}\n"
    );
    let s = parse("t.yaml", &text, &no_base, 0).unwrap();
    let names =
        |s: &Stack| -> Vec<String> { s.components.iter().map(|c| c.name.clone()).collect() };
    assert_eq!(
        names(&s.clone().for_provider(ProviderKind::Multipass)),
        ["a", "b"]
    );
    assert_eq!(names(&s.for_provider(ProviderKind::Existing)), ["a"]);
    // Nothing for every provider may wait on what one provider leaves out.
    let bad = format!(
        "{HEAD}  - {{name: a, providers: [multipass], source: {{addon: x}}}}\n  - {{name: b, needs: [a], source: {{addon: y}}}}\n"
    );
    let e = parse("t.yaml", &bad, &no_base, 0).unwrap_err().to_string();
    assert!(
        e.contains("needs `a`, which does not run with provider `existing`"),
        "{e}"
    );
}

#[test]
fn adopting_needs_templates_of_our_own() {
    let text = format!("{HEAD}  - {{name: a, adopts: true, source: {{addon: x}}}}\n");
    let e = parse("t.yaml", &text, &no_base, 0).unwrap_err().to_string();
    assert!(e.contains("`adopts`"), "{e}");
}

#[test]
fn the_default_stack_owns_the_cluster_dns_only_on_multipass() {
    let s = load("default", Path::new(".")).unwrap();
    let dns = s.component("lab-dns").unwrap();
    assert!(dns.adopts && dns.providers == [ProviderKind::Multipass]);
    assert!(
        s.for_provider(ProviderKind::Existing)
            .component("lab-dns")
            .is_none()
    );
}

#[test]
fn image_pins() {
    assert!(check_image_pinned("nginx:1.29.3-alpine").is_ok());
    assert!(check_image_pinned("localhost:5000/app@sha256:abc").is_ok());
    assert_eq!(check_image_pinned("localhost:5000/app"), Err("has no tag"));
    assert_eq!(
        check_image_pinned("nginx:latest"),
        Err("uses the `latest` tag")
    );
}
