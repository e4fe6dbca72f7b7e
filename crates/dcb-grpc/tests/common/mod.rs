//! The `dcb-server` binary as a child process, for the tests that run it for real.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Runs `command`, which must succeed.
pub(crate) fn run(command: &mut Command) {
    let status = command.status().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A running `dcb-server`, killed when dropped unless it was stopped before.
pub(crate) struct ServerProcess {
    child: Child,
    /// The address it listens on, as it logged it.
    pub(crate) address: String,
}

impl ServerProcess {
    /// Starts `dcb-server` with `args` and waits until it listens. Its log is echoed to stderr,
    /// line by line, so that a failing test shows it.
    pub(crate) fn start(args: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dcb-server"))
            .args(args)
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
    pub(crate) fn terminate(mut self) {
        run(Command::new("kill").arg("-TERM").arg(self.child.id().to_string()));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "dcb-server exited with {status} on SIGTERM");
    }

    /// Sends the server `signal` (a name `kill` knows, such as `TERM`), without waiting for it.
    pub(crate) fn signal(&self, signal: &str) {
        run(Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()));
    }

    /// The server's exit status, once it has exited, if it does so within `timeout`.
    pub(crate) fn exit_within(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL, as a crash or an out-of-memory killer would.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL dcb-server");
        self.child.wait().unwrap();
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
