//! Interoperability with a client nobody here wrote: the `umadb` Python package from PyPI runs
//! `tests/interop/umadb_client.py` against the `dcb-server` binary, once over plain HTTP and once
//! over TLS with an API key (the Python client sends a key only over TLS).
//!
//! The first run creates a virtualenv under `target/interop-venv` (`python3 -m venv`) and
//! installs the pinned `umadb` version into it, which needs `python3` and access to PyPI; later
//! runs reuse it. `DCB_SKIP_INTEROP=1` skips the test on machines without either.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The version the script was written against.
const UMADB: &str = "umadb==0.7.8";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/` of the build that made the server binary.
fn target_dir() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_dcb-server"));
    server.parent().and_then(Path::parent).expect("the binary lies in target/<profile>/").to_path_buf()
}

fn run(command: &mut Command) {
    let status = command.status().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// The virtualenv's python, with `umadb` installed.
fn python() -> PathBuf {
    let venv = target_dir().join("interop-venv");
    let python = venv.join("bin").join("python");
    let installed = Command::new(&python)
        .args(["-c", "import importlib.metadata as m; print(m.version('umadb'))"])
        .output()
        .is_ok_and(|out| {
            let version = String::from_utf8_lossy(&out.stdout);
            out.status.success() && UMADB.strip_prefix("umadb==") == Some(version.trim())
        });
    if !installed {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", UMADB]));
    }
    python
}

/// A running `dcb-server`, stopped with SIGTERM when dropped (killed if that fails).
struct ServerProcess {
    child: Child,
    address: String,
}

impl ServerProcess {
    fn start(extra: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dcb-server"))
            .args(["--listen", "127.0.0.1:0", "--store", "mem"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("DCB_API_KEY")
            .stderr(Stdio::piped())
            .spawn()
            .expect("dcb-server starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().expect("dcb-server exited before serving").unwrap();
            eprintln!("{line}");
            if let Some((_, address)) = line.split_once("address=") {
                break address.trim().to_owned();
            }
        };
        // Keep draining the log so that the server never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| eprintln!("{line}")));
        ServerProcess { child, address }
    }

    /// Stops the server as an operator would, and checks that it exits cleanly.
    fn terminate(mut self) {
        run(Command::new("kill").arg("-TERM").arg(self.child.id().to_string()));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "dcb-server exited with {status} on SIGTERM");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_script(python: &Path, args: &[&str]) {
    let script = manifest_dir().join("tests/interop/umadb_client.py");
    let output = Command::new(python).arg(&script).args(args).output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("interop OK"),
        "the umadb client failed against dcb-server:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_umadb_python_client_works_against_dcb_server() {
    if std::env::var_os("DCB_SKIP_INTEROP").is_some() {
        eprintln!("DCB_SKIP_INTEROP is set: skipping the umadb interop test");
        return;
    }
    let python = python();

    let plain = ServerProcess::start(&[]);
    run_script(&python, &[&format!("http://{}", plain.address)]);
    plain.terminate();

    let certs = manifest_dir().join("tests/interop/certs");
    let (cert, key, ca) = (certs.join("server.pem"), certs.join("server.key"), certs.join("ca.pem"));
    let secured = ServerProcess::start(&[
        "--api-key",
        "interop-key",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let port = secured.address.rsplit(':').next().unwrap();
    run_script(&python, &[&format!("https://localhost:{port}"), "interop-key", ca.to_str().unwrap()]);
    secured.terminate();
}
