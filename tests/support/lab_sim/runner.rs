//! drone-runner-kube, as the test plays it: the fake Drone hands each build here, and the
//! pipeline that runs is the REAL `.drone.yml` of the commit being built, as the fake Drone
//! server fetched it from the fake Gitea.
//!
//! Before any step, the pipeline is linted as drone-runner-kube v1.0.0-rc.5 does
//! (`engine/linter/linter.go`, see `fake_drone::lint::runner`) with the repository's `trusted`
//! flag: an untrusted repository's `config_map`, `secret`, `host` or `claim` volume, or a
//! privileged step, fails the stage with the linter's text and no step runs. A file the runner
//! cannot parse fails the stage the same way (drone/runner-go v1.12.0
//! `pipeline/runtime/runner.go`, `state.FailAll`).
//!
//! What the runner does and this does too: Drone's substitution of `${VAR}` (build variables)
//! and `$$` (a literal `$`) before parsing; the `trigger` (event, branch); `clone: disable`;
//! per step its `environment` (pipeline-level first, `from_secret` from the repository's secrets,
//! masked in logs), its volumes (`config_map` from the runner's namespace, `temp`), the shared
//! workspace `/drone/src`, and `commands` run as one `sh -e` script with each command echoed as
//! `+ cmd`. Container paths are mapped to host directories; the pod's resolver (lab names as the
//! cluster's CoreDNS configuration answers them) is given to git as `http.curloptResolve`.
//! Steps with an `entrypoint` run that program: only kaniko's `/kaniko/executor` is emulated
//! ([`kaniko`]). The first failed step ends the build.
//!
//! Each step's image is pulled as the kubelet would for its pod (`pull`, and whether the node
//! holds the image: [`super::World::pull_if_needed`]).
//!
//! Not emulated: services, `depends_on` graphs (steps run in order), `when` conditions on steps,
//! the images themselves (the host's `sh`, `git`, `base64`, `sed` stand in for `alpine/git`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use homelab::edges::yaml::Value;

use super::World;
use crate::support::fake_drone::{BuildJob, Runner, StageRun, StepRun};

/// Drone's substitution: `$$` is a literal `$`; `${NAME}` and `$NAME` are build variables
/// (unknown ones are empty).
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push(b'$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'{'
                && let Some(end) = text[i + 2..].find('}')
            {
                let name = &text[i + 2..i + 2 + end];
                out.extend_from_slice(vars.get(name).map(String::as_str).unwrap_or("").as_bytes());
                i += 3 + end;
                continue;
            }
            if b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_' {
                let mut j = i + 1;
                while j < b.len() && ident(b[j]) {
                    j += 1;
                }
                out.extend_from_slice(
                    vars.get(&text[i + 1..j])
                        .map(String::as_str)
                        .unwrap_or("")
                        .as_bytes(),
                );
                i = j;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("substitution keeps UTF-8")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

struct Fail(String);

/// The runner the fake Drone calls for every build.
pub fn runner(world: Arc<World>) -> Runner {
    Arc::new(move |job: BuildJob| {
        let world = world.clone();
        Box::pin(async move {
            let dir = world.work.join("builds").join(format!(
                "{}-{}",
                job.repo.replace('/', "-"),
                job.number
            ));
            match run(&world, &job, &dir).await {
                Ok(steps) => StageRun { steps, error: None },
                Err(Fail(why)) => StageRun {
                    steps: Vec::new(),
                    error: Some(why),
                },
            }
        })
    })
}

async fn run(world: &Arc<World>, job: &BuildJob, dir: &Path) -> Result<Vec<StepRun>, Fail> {
    // A build waits for a runner that can reach the server.
    let mut runner = None;
    for _ in 0..600 {
        runner = world.runner_pod.lock().unwrap().clone();
        if runner.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runner = runner.ok_or_else(|| Fail("no runner connected".into()))?;
    if runner.rpc_secret != *world.drone_rpc_secret.lock().unwrap() {
        return Err(Fail(
            "the runner's DRONE_RPC_SECRET is not the server's: it cannot connect".into(),
        ));
    }
    let text = substitute(&job.config, &job.env);
    let pipeline: Value =
        homelab::edges::yaml::from_str(&text).map_err(|e| Fail(format!("yaml: {}", e.full())))?;
    if pipeline["kind"].as_str() != Some("pipeline")
        || pipeline["type"].as_str() != Some("kubernetes")
    {
        return Err(Fail("no kubernetes pipeline for this runner".into()));
    }
    crate::support::fake_drone::lint::runner(&pipeline, job.trusted).map_err(Fail)?;
    let events = strings(&pipeline["trigger"]["event"]);
    let branches = strings(&pipeline["trigger"]["branch"]);
    if (!events.is_empty() && !events.contains(&job.event))
        || (!branches.is_empty() && !branches.contains(&job.branch))
    {
        return Err(Fail(format!(
            "trigger does not match event `{}` on `{}`",
            job.event, job.branch
        )));
    }
    let workspace = dir.join("src");
    std::fs::create_dir_all(&workspace).unwrap();
    let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for v in pipeline["volumes"].as_sequence().into_iter().flatten() {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        let host = dir.join("volumes").join(&vname);
        std::fs::create_dir_all(&host).unwrap();
        if let Some(cm) = v["config_map"]["name"].as_str() {
            let data = world
                .data("configmaps", &runner.namespace, cm)
                .ok_or_else(|| {
                    Fail(format!(
                        "configmap \"{cm}\" not found in `{}`",
                        runner.namespace
                    ))
                })?;
            for (k, t) in data {
                std::fs::write(host.join(k), t).unwrap();
            }
        }
        volumes.insert(vname, host);
    }
    let mut steps = Vec::new();
    let disabled = pipeline["clone"]["disable"].as_bool().unwrap_or(false);
    if !disabled {
        // Drone's own clone step: the system's trust store only.
        let out = shell(
            &format!(
                "git clone --quiet --branch \"{}\" \"{}\" . && git checkout --quiet {}",
                job.branch, job.env["DRONE_GIT_HTTP_URL"], job.commit
            ),
            &workspace,
            &git_dns(world, BTreeMap::new()),
        )
        .await;
        let failed = out.0 != 0;
        steps.push(StepRun {
            name: "clone".into(),
            exit_code: out.0,
            log: out.1,
        });
        if failed {
            return Ok(steps);
        }
    }
    let secret_values: Vec<String> = job
        .secrets
        .values()
        .filter(|v| !v.is_empty())
        .cloned()
        .collect();
    let mask = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|mut l| {
                for s in &secret_values {
                    l = l.replace(s, "********");
                }
                l
            })
            .collect()
    };
    for step in pipeline["steps"].as_sequence().into_iter().flatten() {
        let sname = step["name"].as_str().unwrap_or_default().to_string();
        let step_dir = dir.join("steps").join(&sname);
        let tmp = step_dir.join("tmp");
        let home = step_dir.join("home");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        // The container's view: the workspace, its volumes, its own /tmp.
        let mut mounts: Vec<(String, PathBuf)> = vec![
            ("/drone/src".into(), workspace.clone()),
            ("/tmp".into(), tmp.clone()),
        ];
        for m in step["volumes"].as_sequence().into_iter().flatten() {
            let (vn, path) = (
                m["name"].as_str().unwrap_or(""),
                m["path"].as_str().unwrap_or(""),
            );
            let host = volumes
                .get(vn)
                .ok_or_else(|| Fail(format!("step `{sname}` mounts unknown volume `{vn}`")))?;
            mounts.push((path.to_string(), host.clone()));
        }
        let host_path = |p: &str| -> Option<PathBuf> {
            mounts
                .iter()
                .filter(|(m, _)| p == m || p.starts_with(&format!("{}/", m.trim_end_matches('/'))))
                .max_by_key(|(m, _)| m.len())
                .map(|(m, d)| d.join(p[m.len()..].trim_start_matches('/')))
        };
        let mut env: BTreeMap<String, String> = job.env.clone();
        env.insert("CI".into(), "true".into());
        env.insert("DRONE".into(), "true".into());
        env.insert("DRONE_WORKSPACE".into(), "/drone/src".into());
        env.insert("HOME".into(), home.display().to_string());
        for scope in [&pipeline["environment"], &step["environment"]] {
            for (k, v) in scope.as_mapping().into_iter().flatten() {
                let k = k.as_str().unwrap_or_default().to_string();
                let v = match (v.as_str(), v["from_secret"].as_str()) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(secret)) => job.secrets.get(secret).cloned().ok_or_else(|| {
                        Fail(format!("step `{sname}`: secret `{secret}` not found"))
                    })?,
                    _ => match v {
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => String::new(),
                    },
                };
                env.insert(k, v);
            }
        }
        for v in env.values_mut() {
            if let Some(h) = host_path(v) {
                *v = h.display().to_string();
            }
        }
        // The step's pod: its image pulled as the kubelet would. drone-runner-kube v1.0.0-rc.5
        // reads `pull` as drone/runner-go `manifest` does (`always`, `never`,
        // `if-not-exists`) and `engine/util.go` `toPullPolicy` gives the pod `Always`, `Never`,
        // else `IfNotPresent` (also when unset).
        let image = step["image"].as_str().unwrap_or_default();
        let policy = match step["pull"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("always") => "Always",
            Some("never") => "Never",
            _ => "IfNotPresent",
        };
        if let Err(why) =
            world.pull_if_needed(&serde_json::json!({"imagePullPolicy": policy}), image)
        {
            steps.push(StepRun {
                name: sname,
                exit_code: 2,
                log: vec![format!("ErrImagePull: {why}")],
            });
            break;
        }
        let (code, log) = if let Some(entry) = step["entrypoint"].as_sequence() {
            let program = entry.first().and_then(Value::as_str).unwrap_or_default();
            if program != "/kaniko/executor" {
                (
                    127,
                    vec![format!("the test's runner cannot run `{program}`")],
                )
            } else {
                let args = strings(&step["command"]);
                kaniko(world, &args, &host_path).await
            }
        } else {
            let commands = strings(&step["commands"]);
            let mut script = String::new();
            for c in &commands {
                script.push_str(&format!("echo {}\n{c}\n", shell_quote(&format!("+ {c}"))));
            }
            shell(&script, &workspace, &git_dns(world, env)).await
        };
        let failed = code != 0;
        steps.push(StepRun {
            name: sname,
            exit_code: code,
            log: mask(log),
        });
        if failed {
            break;
        }
    }
    Ok(steps)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The pod's resolver for git in a step: each lab name goes to a local stand-in that connects
/// wherever the cluster's DNS answers it at that moment (see `Network::lab_name`). With
/// [`World::step_proxy`] set, everything else goes to that proxy.
fn git_dns(world: &World, mut env: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if let Some((proxy, direct)) = world.step_proxy.lock().unwrap().clone() {
        for k in [
            "https_proxy",
            "http_proxy",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ] {
            env.insert(k.into(), proxy.clone());
        }
        env.insert("no_proxy".into(), direct.clone());
        env.insert("NO_PROXY".into(), direct);
    }
    let mut config = Vec::new();
    for host in &world.lab_hosts {
        let at = world.net.lab_name(host, 443);
        // The name stays (TLS checks it), the port moves to the stand-in's.
        config.push((
            "http.curloptResolve".to_string(),
            format!("{host}:{}:{}", at.port(), at.ip()),
        ));
        config.push((
            format!("url.https://{host}:{}/.insteadOf", at.port()),
            format!("https://{host}/"),
        ));
    }
    env.insert("GIT_CONFIG_COUNT".into(), config.len().to_string());
    for (i, (k, v)) in config.into_iter().enumerate() {
        env.insert(format!("GIT_CONFIG_KEY_{i}"), k);
        env.insert(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
    env
}

async fn shell(script: &str, cwd: &Path, env: &BTreeMap<String, String>) -> (i64, Vec<String>) {
    let out = tokio::process::Command::new("sh")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let mut log: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    log.extend(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_string),
    );
    (out.status.code().unwrap_or(1) as i64, log)
}

/// kaniko's executor, for what the pipeline asks of it: `--context=dir://…`, `--dockerfile`,
/// `--destination` (pushed), `--registry-certificate=<host>=<file>` (the only extra root for
/// that registry), `--registry-map` and `--skip-default-registry-fallback`. The Dockerfile's
/// `FROM` base is fetched as [`retrieve_base`] says, `COPY` takes files from the
/// context, metadata instructions are recorded as nothing; `RUN` cannot be emulated and fails the
/// build. The push authenticates at `https://<registry>/v2/` through the ingress with the docker
/// config's `auth` for that registry (as kaniko does), then stores the image's files.
async fn kaniko(
    world: &Arc<World>,
    args: &[String],
    host_path: &(dyn Fn(&str) -> Option<PathBuf> + Sync),
) -> (i64, Vec<String>) {
    let mut log = Vec::new();
    let fail = |log: &mut Vec<String>, m: String| {
        log.push(format!("error: {m}"));
        1
    };
    let arg = |k: &str| -> Vec<String> {
        args.iter()
            .filter_map(|a| a.strip_prefix(&format!("--{k}=")).map(str::to_string))
            .collect()
    };
    let Some(context) = arg("context")
        .first()
        .and_then(|c| c.strip_prefix("dir://"))
        .and_then(host_path)
    else {
        return (fail(&mut log, "no --context=dir://…".into()), log);
    };
    let dockerfile = arg("dockerfile")
        .first()
        .and_then(|d| host_path(d))
        .unwrap_or_else(|| context.join("Dockerfile"));
    let Ok(text) = std::fs::read_to_string(&dockerfile) else {
        return (
            fail(
                &mut log,
                format!("read Dockerfile `{}`", dockerfile.display()),
            ),
            log,
        );
    };
    let certs: BTreeMap<String, String> = arg("registry-certificate")
        .iter()
        .filter_map(|c| c.split_once('='))
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .collect();
    let docker = host_path("/kaniko/.docker/config.json")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .unwrap_or_default();
    // `--registry-map=<registry>=<host>[/<prefix>]`, several joined by `;` or given more than
    // once (`pkg/config/args.go` `multiKeyMultiValueArg`).
    let mut maps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in arg("registry-map") {
        for kv in m.split(';').filter(|kv| !kv.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else {
                return (
                    fail(
                        &mut log,
                        format!("invalid argument value. expect key=value, got {kv}"),
                    ),
                    log,
                );
            };
            maps.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    let pull = Pull {
        maps,
        skip_fallback: args.iter().any(|a| a == "--skip-default-registry-fallback"),
        ca: certs
            .iter()
            .filter_map(|(h, p)| Some((h.clone(), std::fs::read_to_string(host_path(p)?).ok()?)))
            .collect(),
        docker: docker.clone(),
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match instr.to_ascii_uppercase().as_str() {
            // kaniko fetches the base image from a registry itself, never from the node's
            // containerd (osscontainertools/kaniko v1.28.3 `pkg/util/image_util.go`
            // `RetrieveSourceImage` → `pkg/image/remote/remote.go` `RetrieveRemoteImage`),
            // trying the `--registry-map` targets of its registry first.
            "FROM" => {
                let base = rest.split_whitespace().next().unwrap_or_default();
                log.push(format!("INFO Retrieving image manifest {base}"));
                if let Err(why) = retrieve_base(world, base, &pull).await {
                    log.extend(why.0);
                    return (fail(&mut log, why.1), log);
                }
                log.push(format!("INFO Retrieved {base}"));
            }
            "COPY" => {
                let parts: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|p| !p.starts_with("--"))
                    .collect();
                let Some((dest, srcs)) = parts.split_last() else {
                    return (fail(&mut log, format!("bad COPY: {line}")), log);
                };
                for src in srcs {
                    let Ok(bytes) = std::fs::read(context.join(src)) else {
                        return (
                            fail(
                                &mut log,
                                format!("COPY failed: file not found in build context: {src}"),
                            ),
                            log,
                        );
                    };
                    let target = if dest.ends_with('/') || srcs.len() > 1 {
                        format!(
                            "{}/{}",
                            dest.trim_end_matches('/'),
                            src.rsplit('/').next().unwrap()
                        )
                    } else {
                        dest.to_string()
                    };
                    files.insert(target, bytes);
                }
                log.push(format!("INFO COPY {rest}"));
            }
            "RUN" => return (fail(&mut log, "the test's kaniko cannot RUN".into()), log),
            _ => log.push(format!("INFO {line}")),
        }
    }
    for dest in arg("destination") {
        let Some((registry, path)) = dest.split_once('/') else {
            return (fail(&mut log, format!("bad destination `{dest}`")), log);
        };
        let (image, tag) = path.rsplit_once(':').unwrap_or((path, "latest"));
        let Some(auth) = docker["auths"][registry]["auth"].as_str() else {
            return (
                fail(
                    &mut log,
                    format!("no credentials for `{registry}` in the docker config"),
                ),
                log,
            );
        };
        let http = lab_client(world, registry, pull.ca.get(registry).map(String::as_str));
        let url = format!("https://{registry}/v2/");
        let authorization = format!("Basic {auth}");
        match http
            .get(&url)
            .header("authorization", &authorization)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                return (
                    fail(
                        &mut log,
                        format!("checking push permission for \"{dest}\": {}", r.status()),
                    ),
                    log,
                );
            }
            Err(e) => {
                return (
                    fail(
                        &mut log,
                        format!(
                            "checking push permission for \"{dest}\": {}",
                            homelab::edges::http::error_chain(&e)
                        ),
                    ),
                    log,
                );
            }
        }
        let gitea = world.gitea.lock().unwrap().clone().unwrap();
        if let Err(e) = gitea.store_image(&authorization, image, tag, files.clone()) {
            return (fail(&mut log, format!("push \"{dest}\": {e}")), log);
        }
        log.push(format!("INFO Pushed {dest}"));
    }
    (0, log)
}

/// What kaniko pulls a base image with: its registry maps, the extra roots of
/// `--registry-certificate`, the docker config's logins.
struct Pull {
    maps: BTreeMap<String, Vec<String>>,
    skip_fallback: bool,
    ca: BTreeMap<String, String>,
    docker: serde_json::Value,
}

/// An HTTPS client for `registry` as the pod reaches it: the name as the cluster's DNS answers
/// it, trusting the system roots plus `ca` (kaniko's `--registry-certificate`).
fn lab_client(world: &World, registry: &str, ca: Option<&str>) -> reqwest::Client {
    let tls = homelab::edges::http::rustls_config(ca).unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(registry, world.net.lab_name(registry, 443))
        .build()
        .unwrap()
}

/// go-containerregistry v0.21.9 `pkg/name` as kaniko vendors it: `(registry, repository,
/// tag)`; the registry is the first part when it is `localhost` or holds `.` or `:`, else Docker
/// Hub (`index.docker.io`, which `docker.io` is rewritten to), whose one-part names get
/// `library/`.
fn parse_reference(image: &str) -> (String, String, String) {
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (image, "latest"),
    };
    let (registry, repo) = match name.split_once('/') {
        Some((r, rest)) if r == "localhost" || r.contains('.') || r.contains(':') => (r, rest),
        _ => ("", name),
    };
    let registry = match registry {
        "" | "docker.io" => "index.docker.io",
        r => r,
    };
    let repo = if registry == "index.docker.io" && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo.to_string()
    };
    (registry.to_string(), repo, tag.to_string())
}

/// kaniko's `RetrieveRemoteImage` for a base: each `--registry-map` target of its registry in
/// turn (a failure is a warning, then the next), then the base's own registry unless
/// `--skip-default-registry-fallback`. The lab's registry (Gitea) is asked over HTTPS through
/// the cluster's network with the docker config's login; any other registry is a connection
/// outside the lab ([`World::reach_outside`]). Err: the log lines so far and the error.
async fn retrieve_base(
    world: &World,
    base: &str,
    pull: &Pull,
) -> Result<(), (Vec<String>, String)> {
    let (registry, repo, tag) = parse_reference(base);
    let mut log = Vec::new();
    let mapped = pull.maps.get(&registry).cloned().unwrap_or_default();
    for mapping in &mapped {
        // `parseRegistryMapping`: the host, then a repository prefix.
        let (host, prefix) = mapping.split_once('/').unwrap_or((mapping, ""));
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let remapped_repo = format!("{prefix}{repo}");
        log.push(format!(
            "INFO Retrieving image {host}/{remapped_repo}:{tag} from mapped registry {host}"
        ));
        match fetch_manifest(world, host, &remapped_repo, &tag, pull).await {
            Ok(()) => return Ok(()),
            Err(why) => log.push(format!(
                "WARN Failed to retrieve image {host}/{remapped_repo}:{tag} from remapped registry {host}: {why}. Will try with the next registry, or fallback to the original registry."
            )),
        }
    }
    if !mapped.is_empty() && pull.skip_fallback {
        return Err((
            log,
            format!("image not found on any configured mapped registries for {base}"),
        ));
    }
    log.push(format!(
        "INFO Retrieving image {base} from registry {registry}"
    ));
    fetch_manifest(world, &registry, &repo, &tag, pull)
        .await
        .map_err(|why| (log, format!("retrieving image {base}: {why}")))
}

/// `GET /v2/<repo>/manifests/<tag>` at `registry`: the lab's own over HTTPS, anything else is a
/// connection outside the lab. The docker config's login goes as basic credentials, which
/// Gitea's registry takes on every route; go-containerregistry would first trade them for a
/// bearer token at the realm `/v2/` names (not played: the login itself is `wire-gitea`'s
/// `registry` step's test).
async fn fetch_manifest(
    world: &World,
    registry: &str,
    repo: &str,
    tag: &str,
    pull: &Pull,
) -> Result<(), String> {
    if registry != world.gitea_host {
        let reference = if registry == "index.docker.io" {
            format!("docker.io/{repo}:{tag}")
        } else {
            format!("{registry}/{repo}:{tag}")
        };
        return world.reach_outside(&format!("kaniko base {reference}"));
    }
    let http = lab_client(world, registry, pull.ca.get(registry).map(String::as_str));
    let mut req = http
        .get(format!("https://{registry}/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        );
    if let Some(auth) = pull.docker["auths"][registry]["auth"].as_str() {
        req = req.header("authorization", format!("Basic {auth}"));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| homelab::edges::http::error_chain(&e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(format!(
        "GET {registry}/v2/{repo}/manifests/{tag}: {status} {}",
        body.trim()
    ))
}
