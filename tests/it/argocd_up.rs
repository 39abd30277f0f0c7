//! `homelab up --stack argocd` against the fakes wired as one lab ([`lab_sim`]) (issue 15).

use crate::support::common;
use crate::support::lab_sim;

use lab_sim::{Provider, Sim};

#[track_caller]
fn ok(sim: &Sim, what: &str, run: &common::Run) {
    assert_eq!(
        run.code,
        Some(0),
        "{what} failed\nstdout:\n{}\nstderr:\n{}\n{}",
        run.stdout,
        run.stderr,
        sim.diagnostics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_with_the_argocd_stack_deploys_argo_cd_without_conflicts() {
    let sim = Sim::start(Provider::Multipass, 11).await;
    let up = sim
        .homelab(&["up", "--stack", "argocd", "--no-verify"])
        .await;
    ok(&sim, "up --stack argocd", &up);
}
