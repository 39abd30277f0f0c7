//! The decision about Drone's OAuth2 app in Gitea, as a pure function of what was read.
//!
//! Place in the data flow: `wire` lists the apps, calls [`plan`], then makes the one call it
//! says. Architecture invariant: the client secret is only ever known from a create or update
//! answer (listings hide it), so "keep" requires the lab state to hold it for this very client id.

use crate::services::gitea::types::OAuth2Application;

/// The app homelab wants.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Name (`drone`).
    pub name: String,
    /// The one redirect URI (`https://drone.<domain>/login`).
    pub redirect_uri: String,
}

/// What the lab state holds for the client.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// Client id, empty when none.
    pub client_id: String,
    /// Whether a client secret is stored.
    pub has_secret: bool,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No app of that name: create it.
    Create,
    /// The app exists and the state can use it.
    Keep {
        /// Its id.
        id: i64,
        /// Its client id.
        client_id: String,
    },
    /// The app exists but must change: PATCH it, which also regenerates its secret.
    Update {
        /// Its id.
        id: i64,
        /// Why, for the report.
        reason: String,
    },
}

/// What to do, plus duplicates (other apps with the same name) to delete: Drone uses exactly
/// one client, and a stale twin only confuses whoever looks at Gitea's settings.
pub fn plan(existing: &[OAuth2Application], want: &Desired, stored: &Stored) -> (Plan, Vec<i64>) {
    let named: Vec<&OAuth2Application> = existing.iter().filter(|a| a.name == want.name).collect();
    if named.is_empty() {
        return (Plan::Create, Vec::new());
    }
    // Prefer the app whose client the state already holds.
    let chosen = named
        .iter()
        .find(|a| !stored.client_id.is_empty() && a.client_id == stored.client_id)
        .or_else(|| named.iter().min_by_key(|a| a.id))
        .copied()
        .expect("named is not empty");
    let duplicates = named
        .iter()
        .filter(|a| a.id != chosen.id)
        .map(|a| a.id)
        .collect();
    let mut reasons = Vec::new();
    if chosen.redirect_uris != [want.redirect_uri.clone()] {
        reasons.push(format!(
            "its redirect URIs are {:?}, not [{:?}]",
            chosen.redirect_uris, want.redirect_uri
        ));
    }
    if !chosen.confidential_client {
        reasons.push("it is not a confidential client".into());
    }
    if stored.client_id != chosen.client_id {
        reasons.push("the lab state holds another client id (its secret is unknown)".into());
    } else if !stored.has_secret {
        reasons.push("the lab state lost its client secret".into());
    }
    let plan = if reasons.is_empty() {
        Plan::Keep {
            id: chosen.id,
            client_id: chosen.client_id.clone(),
        }
    } else {
        Plan::Update {
            id: chosen.id,
            reason: reasons.join("; "),
        }
    };
    (plan, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: i64, name: &str, client: &str, uri: &str, confidential: bool) -> OAuth2Application {
        OAuth2Application {
            id,
            name: name.into(),
            client_id: client.into(),
            redirect_uris: vec![uri.into()],
            confidential_client: confidential,
            ..OAuth2Application::default()
        }
    }

    fn want() -> Desired {
        Desired {
            name: "drone".into(),
            redirect_uri: "https://drone.lab.test/login".into(),
        }
    }

    fn stored(client_id: &str, has_secret: bool) -> Stored {
        Stored {
            client_id: client_id.into(),
            has_secret,
        }
    }

    #[test]
    fn missing_app_is_created() {
        let other = app(1, "grafana", "g", "https://g/login", true);
        assert_eq!(
            plan(&[other], &want(), &Stored::default()),
            (Plan::Create, vec![])
        );
    }

    #[test]
    fn matching_app_with_known_secret_is_kept() {
        let a = app(3, "drone", "c3", "https://drone.lab.test/login", true);
        assert_eq!(
            plan(&[a], &want(), &stored("c3", true)),
            (
                Plan::Keep {
                    id: 3,
                    client_id: "c3".into()
                },
                vec![]
            )
        );
    }

    #[test]
    fn lost_secret_changed_domain_or_public_client_updates() {
        let a = app(3, "drone", "c3", "https://drone.lab.test/login", true);
        let (p, _) = plan(std::slice::from_ref(&a), &want(), &stored("c3", false));
        assert!(
            matches!(p, Plan::Update { id: 3, ref reason } if reason.contains("lost its client secret")),
            "{p:?}"
        );
        let (p, _) = plan(std::slice::from_ref(&a), &want(), &Stored::default());
        assert!(
            matches!(p, Plan::Update { ref reason, .. } if reason.contains("another client id")),
            "{p:?}"
        );
        let moved = app(3, "drone", "c3", "https://drone.old.test/login", true);
        let (p, _) = plan(&[moved], &want(), &stored("c3", true));
        assert!(
            matches!(p, Plan::Update { ref reason, .. } if reason.contains("redirect URIs")),
            "{p:?}"
        );
        let public = app(3, "drone", "c3", "https://drone.lab.test/login", false);
        let (p, _) = plan(&[public], &want(), &stored("c3", true));
        assert!(
            matches!(p, Plan::Update { ref reason, .. } if reason.contains("confidential")),
            "{p:?}"
        );
    }

    #[test]
    fn duplicates_are_listed_and_the_stored_client_wins() {
        let a = app(3, "drone", "c3", "https://drone.lab.test/login", true);
        let b = app(7, "drone", "c7", "https://drone.lab.test/login", true);
        let (p, dups) = plan(&[a.clone(), b.clone()], &want(), &stored("c7", true));
        assert_eq!(
            p,
            Plan::Keep {
                id: 7,
                client_id: "c7".into()
            }
        );
        assert_eq!(dups, vec![3]);
        let (p, dups) = plan(&[b, a], &want(), &Stored::default());
        assert!(
            matches!(p, Plan::Update { id: 3, .. }),
            "lowest id when the state knows none: {p:?}"
        );
        assert_eq!(dups, vec![7]);
    }
}
