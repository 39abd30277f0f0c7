//! The garbage collector of kube-controller-manager, for what it does to deletions: it finishes
//! foreground and orphaning deletions and removes dependents whose owners are gone. The API
//! server alone never deletes a dependent ([`super::store::Store::delete`] only marks or removes
//! the object named); this is the controller that does, a moment later, so the window in which
//! an object is still there with a `deletionTimestamp` exists here as it does on a real cluster.
//!
//! Mirrors kubernetes `pkg/controller/garbagecollector/garbagecollector.go` (`attemptToDeleteItem`,
//! `classifyReferences`, `processDeletingDependentsItem`, `attemptToOrphanWorker`) and
//! `graph_builder.go` (an owner gaining `foregroundDeletion` or `orphan` is processed; a removed
//! owner's dependents are processed), Kubernetes 1.27–1.36:
//! - a dependent whose owners are all gone (dangling: no object with the reference's uid) is
//!   deleted, with the policy of its own GC finalizer, else in the background;
//! - a dependent with an owner waiting for its dependents (`foregroundDeletion`) and no other
//!   live owner is deleted — in the foreground itself when it has dependents of its own; one that
//!   still has a live owner only loses the references to the dangling and waiting owners;
//! - an owner in foreground deletion loses its `foregroundDeletion` finalizer once no dependent
//!   with `blockOwnerDeletion: true` remains (then the API server removes it, if no other
//!   finalizer holds it);
//! - an owner in orphaning deletion: its dependents lose their reference to it, then it loses
//!   its `orphan` finalizer.
//!
//! Each pass runs [`Inner::gc_delay`] after an event that concerns it (the graph builder reacts
//! to watch events too), and its own writes are events that schedule the next pass, so a chain
//! (Deployment → ReplicaSet → Pods) takes a few passes, as upstream takes a few work-queue
//! rounds. Not modelled: the absent-owner cache, cycles between foreground deletions, owners
//! whose kind is not served.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::Inner;
use super::store::{FOREGROUND_FINALIZER, Key, ORPHAN_FINALIZER, Store, WatchEvent, finalizers};

/// Whether a watch event can give the garbage collector work.
fn concerns(e: &WatchEvent) -> bool {
    if e.kind == "DELETED" {
        return true;
    }
    let meta = &e.object["metadata"];
    let has_owners = meta["ownerReferences"]
        .as_array()
        .is_some_and(|r| !r.is_empty());
    let gc_finalizer = meta["deletionTimestamp"].is_string()
        && finalizers(&e.object)
            .iter()
            .any(|f| f == FOREGROUND_FINALIZER || f == ORPHAN_FINALIZER);
    has_owners || gc_finalizer
}

/// React to a watch event: schedule a pass unless one is already waiting.
pub(super) fn observe(inner: &Arc<Inner>, e: &WatchEvent) {
    if concerns(e) {
        schedule(inner);
    }
}

/// Run a pass after the GC delay (one at a time; events meanwhile are covered by it).
pub(super) fn schedule(inner: &Arc<Inner>) {
    if inner.gc_pending.swap(true, Ordering::SeqCst) {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        let delay = *inner.gc_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        // Cleared before the pass reads the store: a change after this point schedules another.
        inner.gc_pending.store(false, Ordering::SeqCst);
        let changed = {
            let mut store = inner.store.lock().unwrap();
            let before = store.rv;
            sweep(&mut store);
            store.rv != before
        };
        if changed {
            inner.publish();
        }
    });
}

fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

/// The live object a reference names: same uid and name (a same-named object with another uid
/// is a different object, and the reference dangles, as `isDangling` decides).
fn find_owner<'a>(store: &'a Store, r: &Value) -> Option<&'a Value> {
    let want = r["uid"].as_str()?;
    store
        .objects
        .values()
        .find(|o| uid(o) == want && o["metadata"]["name"] == r["name"])
}

fn dependents_of(store: &Store, owner_uid: &str) -> Vec<(Key, Value)> {
    store
        .objects
        .iter()
        .filter(|(_, o)| owner_refs(o).iter().any(|r| r["uid"] == owner_uid))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect()
}

/// The policy `attemptToDeleteItem` deletes with when no owner waits: the object's own GC
/// finalizer, else background.
fn own_policy(obj: &Value) -> &'static str {
    let f = finalizers(obj);
    if f.iter().any(|x| x == ORPHAN_FINALIZER) {
        "Orphan"
    } else if f.iter().any(|x| x == FOREGROUND_FINALIZER) {
        "Foreground"
    } else {
        "Background"
    }
}

fn delete(store: &mut Store, key: &Key, policy: &str) {
    if let Some(rt) = store.find_type_by_key(key) {
        let _ = store.delete(&rt, &key.2, &key.3, policy, false);
    }
}

/// One pass over the whole store.
pub fn sweep(store: &mut Store) {
    // Dependents (attemptToDeleteItem): objects not yet being deleted that have owners.
    let candidates: Vec<Key> = store
        .objects
        .iter()
        .filter(|(_, o)| !deleting(o) && !owner_refs(o).is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    for key in candidates {
        let Some(obj) = store.objects.get(&key).cloned() else {
            continue;
        };
        let refs = owner_refs(&obj);
        let (mut solid, mut stale) = (0, Vec::new());
        let mut waiting = false;
        for r in &refs {
            match find_owner(store, r) {
                None => stale.push(r["uid"].clone()),
                Some(owner)
                    if deleting(owner)
                        && finalizers(owner).iter().any(|f| f == FOREGROUND_FINALIZER) =>
                {
                    waiting = true;
                    stale.push(r["uid"].clone());
                }
                Some(_) => solid += 1,
            }
        }
        if solid > 0 {
            if stale.is_empty() {
                continue;
            }
            // Keep the object; drop the references to owners that are gone or going.
            let mut new = obj.clone();
            let kept: Vec<Value> = refs
                .into_iter()
                .filter(|r| !stale.contains(&r["uid"]))
                .collect();
            new["metadata"]["ownerReferences"] = json!(kept);
            let _ = store.gc_write(&key, new);
        } else if waiting && !dependents_of(store, uid(&obj)).is_empty() {
            delete(store, &key, "Foreground");
        } else {
            delete(store, &key, own_policy(&obj));
        }
    }

    // Owners whose deletion waits for the collector.
    let owners: Vec<(Key, Value)> = store
        .objects
        .iter()
        .filter(|(_, o)| deleting(o))
        .filter(|(_, o)| {
            finalizers(o)
                .iter()
                .any(|f| f == FOREGROUND_FINALIZER || f == ORPHAN_FINALIZER)
        })
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for (key, owner) in owners {
        let owner_uid = uid(&owner).to_string();
        let fins = finalizers(&owner);
        let done = if fins.iter().any(|f| f == ORPHAN_FINALIZER) {
            // attemptToOrphanWorker: unlink every dependent, then let the owner go.
            for (dk, dep) in dependents_of(store, &owner_uid) {
                let mut new = dep.clone();
                let kept: Vec<Value> = owner_refs(&dep)
                    .into_iter()
                    .filter(|r| r["uid"] != owner_uid.as_str())
                    .collect();
                new["metadata"]["ownerReferences"] = json!(kept);
                let _ = store.gc_write(&dk, new);
            }
            ORPHAN_FINALIZER
        } else {
            // processDeletingDependentsItem: only blocking dependents hold the owner.
            let blocking = dependents_of(store, &owner_uid).into_iter().any(|(_, d)| {
                owner_refs(&d)
                    .iter()
                    .any(|r| r["uid"] == owner_uid.as_str() && r["blockOwnerDeletion"] == true)
            });
            if blocking {
                continue;
            }
            FOREGROUND_FINALIZER
        };
        let Some(current) = store.objects.get(&key).cloned() else {
            continue;
        };
        let mut new = current.clone();
        let left: Vec<String> = finalizers(&current)
            .into_iter()
            .filter(|f| f != done)
            .collect();
        new["metadata"]["finalizers"] = json!(left);
        let _ = store.gc_write(&key, new);
    }
}
