use super::*;

fn rec(commit: &str, tree: &str) -> SeedRecord {
    SeedRecord {
        commit: commit.into(),
        tree: tree.into(),
        foreign: None,
    }
}

#[test]
fn seed_actions() {
    assert_eq!(seed_action("t1", None, None), SeedAction::Initial);
    assert_eq!(
        seed_action("t1", None, Some(&rec("c1", "t1"))),
        SeedAction::Initial
    );
    assert_eq!(
        seed_action("t1", Some("c1"), Some(&rec("c1", "t1"))),
        SeedAction::UpToDate
    );
    assert_eq!(
        seed_action("t2", Some("c1"), Some(&rec("c1", "t1"))),
        SeedAction::Update {
            parent: "c1".into()
        }
    );
    // Regression: commits of the lab's own loop (a tag bump, `verify`) made every later `up`
    // fetch the repository and warn that it "has commits homelab did not make".
    assert_eq!(
        seed_action("t1", Some("c9"), Some(&rec("c1", "t1"))),
        SeedAction::MovedOn { head: "c9".into() }
    );
    assert_eq!(
        seed_action("t2", Some("c9"), Some(&rec("c1", "t1"))),
        SeedAction::Inspect { head: "c9".into() }
    );
    assert_eq!(
        seed_action("t1", Some("c9"), None),
        SeedAction::Inspect { head: "c9".into() }
    );
    let mut r = rec("c1", "t0");
    r.foreign = Some(("c9".into(), "t9".into()));
    assert_eq!(
        seed_action("t1", Some("c9"), Some(&r)),
        SeedAction::Diverged { head: "c9".into() }
    );
    assert_eq!(
        seed_action("t9", Some("c9"), Some(&r)),
        SeedAction::UpToDate
    );
}

#[test]
fn scopes_follow_the_version() {
    assert_eq!(token_scopes("1.26.1").unwrap().len(), TOKEN_SCOPES.len());
    assert_eq!(
        token_scopes("1.27.0+dev-10-gabc").unwrap(),
        token_scopes("1.20.0").unwrap()
    );
    assert_eq!(token_scopes("1.19.4"), Some(vec!["all".to_string()]));
    assert_eq!(token_scopes("1.18.5"), None);
    assert!(token_scopes("11.0.1+gitea-1.22.0").is_some());
    assert!(scopes_cover(
        Some(&vec!["all".into()]),
        token_scopes("1.26.1").as_ref()
    ));
    assert!(!scopes_cover(
        Some(&vec!["write:repository".into()]),
        token_scopes("1.26.1").as_ref()
    ));
    assert!(scopes_cover(None, token_scopes("1.26.1").as_ref()));
}

fn hook(id: i64, url: &str, kind: &str) -> Hook {
    Hook {
        id,
        kind: kind.into(),
        config: BTreeMap::from([
            ("url".to_string(), url.to_string()),
            ("content_type".to_string(), "json".to_string()),
        ]),
        events: vec!["push".into()],
        active: true,
        branch_filter: "*".into(),
    }
}

#[test]
fn hook_plans() {
    let url = DEFAULT_SYNC_WEBHOOK_URL;
    assert_eq!(plan_hook(&[], url, true).action, HookAction::Create);
    let other = hook(1, "http://drone.drone.svc/hook", "gitea");
    assert_eq!(
        plan_hook(std::slice::from_ref(&other), url, false).action,
        HookAction::Create,
        "Drone's hook is not ours"
    );
    let ours = hook(2, url, "gitea");
    assert_eq!(
        plan_hook(&[other.clone(), ours.clone()], url, false),
        HookPlan {
            action: HookAction::Keep(2),
            delete: vec![]
        }
    );
    assert_eq!(
        plan_hook(std::slice::from_ref(&ours), url, true).action,
        HookAction::Update(2)
    );
    let mut inactive = ours.clone();
    inactive.active = false;
    assert_eq!(
        plan_hook(&[inactive], url, false).action,
        HookAction::Update(2)
    );
    let dup = hook(7, url, "gitea");
    assert_eq!(
        plan_hook(&[dup, ours.clone()], url, false),
        HookPlan {
            action: HookAction::Keep(2),
            delete: vec![7]
        }
    );
    assert_eq!(
        plan_hook(&[hook(3, url, "slack")], url, false).action,
        HookAction::Replace(3)
    );
}

#[test]
fn cli_requests_keep_the_password_out_of_argv() {
    let admin = AdminLogin {
        user: "lab-admin".into(),
        email: "lab-admin@gitea.x".into(),
        password: Secret::new("pw-123"),
    };
    for req in [
        admin_create_request(&GiteaCli::default(), &admin),
        admin_reset_request(&GiteaCli::default(), &admin),
    ] {
        assert!(req.argv.iter().all(|a| !a.contains("pw-123")), "{req:?}");
        assert_eq!(req.stdin.as_ref().unwrap().expose(), "pw-123");
        assert!(req.argv.contains(&"/etc/gitea/app.ini".to_string()));
    }
}

#[test]
fn fingerprint_hides_the_secret_and_tracks_changes() {
    let a = secret_fingerprint(&Secret::new("s1"));
    assert_ne!(a, secret_fingerprint(&Secret::new("s2")));
    assert!(!a.contains("s1"));
    assert_eq!(a.len(), 32);
}
