//! `oxsdnctl` (the binary) refuses unsafe or broken store options before it contacts
//! anything: plain HTTP to an etcd that is not on this host, https:// without the CA,
//! certificate files that are missing or hold no certificate. Each gets a message naming
//! the option or file, from the command line or the environment alike. (The addresses
//! below are never contacted: the options are refused first.)

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

/// Environment variables: names and values.
type Env<'a> = Vec<(&'a str, &'a str)>;

/// Runs `oxsdnctl get netnamespaces` with `args` and `env` and nothing else of the
/// caller's environment about the store.
fn oxsdnctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_oxsdnctl"));
    for var in [
        "OXSDN_STORE",
        "OXSDN_ETCD_ENDPOINTS",
        "OXSDN_ETCD_CACERT",
        "OXSDN_ETCD_CERT",
        "OXSDN_ETCD_KEY",
        "OXSDN_ETCD_INSECURE",
    ] {
        command.env_remove(var);
    }
    command.args(args).arg("get").arg("netnamespaces").envs(env.iter().copied()).output().expect("running oxsdnctl")
}

/// Runs a command line that must be refused at once; returns its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let out = oxsdnctl(args, env);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}: it waited for something", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plain_http_to_a_remote_etcd_is_refused_without_etcd_insecure() {
    let expected = "oxsdnctl: invalid store options: refusing plain HTTP to etcd endpoint http://192.0.2.5:2379: it is not a \
                    loopback address, so whoever reaches it (pods included) could read and rewrite every project's VNID. \
                    Use https:// with --etcd-cacert, --etcd-cert and --etcd-key, or say --etcd-insecure\n";
    assert_eq!(refused(&["--etcd-endpoints", "http://192.0.2.5:2379"], &[]), expected);
    assert_eq!(refused(&[], &[("OXSDN_ETCD_ENDPOINTS", "http://192.0.2.5:2379")]), expected);
    // One remote endpoint among loopback ones is enough.
    let err = refused(&["--etcd-endpoints", "http://127.0.0.1:2379,http://etcd.example:2379"], &[]);
    assert!(err.contains("refusing plain HTTP to etcd endpoint http://etcd.example:2379"), "{err}");
    // Saying it explicitly is not saying it.
    let err = refused(&["--etcd-endpoints", "http://192.0.2.5:2379"], &[("OXSDN_ETCD_INSECURE", "false")]);
    assert!(err.contains("refusing plain HTTP"), "{err}");
}

#[test]
fn tls_options_that_cannot_work_are_refused_naming_the_option_or_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.pem");
    let not_pem = tmp.path().join("notes.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let https = ["--etcd-endpoints", "https://127.0.0.1:1"];
    let cases: Vec<(Vec<&str>, Env, String)> = vec![
        (
            https.to_vec(),
            vec![],
            "needs --etcd-cacert (the CA certificate that signed etcd's server certificate)".into(),
        ),
        (
            vec!["--etcd-endpoints", "https://127.0.0.1:1", "--etcd-cacert", missing.to_str().unwrap()],
            vec![],
            format!("--etcd-cacert {}: cannot read: No such file or directory", missing.display()),
        ),
        (
            https.to_vec(),
            vec![("OXSDN_ETCD_CACERT", not_pem.to_str().unwrap())],
            format!("--etcd-cacert {}: no certificate in PEM form", not_pem.display()),
        ),
        (
            https.to_vec(),
            vec![("OXSDN_ETCD_CACERT", not_pem.to_str().unwrap()), ("OXSDN_ETCD_CERT", not_pem.to_str().unwrap())],
            "--etcd-cert needs --etcd-key (its private key)".into(),
        ),
        (
            vec!["--etcd-endpoints", "http://127.0.0.1:1", "--etcd-cacert", not_pem.to_str().unwrap()],
            vec![],
            "--etcd-cacert, --etcd-cert and --etcd-key are for https:// endpoints; http://127.0.0.1:1 is plain HTTP"
                .into(),
        ),
        (
            vec!["--etcd-cacert", not_pem.to_str().unwrap()],
            vec![],
            "--etcd-cacert is given but no --etcd-endpoints: it applies to etcd only".into(),
        ),
    ];
    for (args, env, expected) in cases {
        let err = refused(&args, &env);
        assert!(err.contains(&expected), "{args:?} {env:?}: {err}");
    }
}
