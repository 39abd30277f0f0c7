//! Reaching a Kubernetes cluster: the client and kubeconfigs, server-side apply with its
//! readiness waits, deploying the stack's components in order, reissuing certificates after the
//! lab CA changes, and the microk8s snaps in the cache.

pub mod apply;
pub mod deploy;
pub mod image_cache;
pub mod kube;
pub mod kubeconfig;
pub mod reissue;
pub mod snaps;
pub mod upstream;
