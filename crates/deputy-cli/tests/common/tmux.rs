//! A tmux server of the test's own: a real terminal for the CLI, driven with keys and read
//! from the screen.

use std::time::{Duration, Instant};

use super::text;

/// A tmux server of the test's own, with one window running a shell.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(name: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("deputy-{name}-{}", std::process::id()),
        };
        let status = tmux
            .command(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "100",
                "-y",
                "30",
                "bash --norc --noprofile",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "tmux did not start");
        tmux
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("tmux");
        command.args(["-L", &self.socket]).args(args);
        command
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.command(&args).status().unwrap().success());
    }

    pub fn screen(&self) -> String {
        text(
            &self
                .command(&["capture-pane", "-p", "-t", "t", "-S", "-100"])
                .output()
                .unwrap()
                .stdout,
        )
    }

    /// Waits until the screen shows `wanted` (after `count - 1` earlier occurrences).
    pub fn wait_for(&self, wanted: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = self.screen();
            if screen.matches(wanted).count() >= count {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{wanted:?} never appeared; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// With a shell running on the terminal under test: resizes the window and waits until
    /// `stty size` in that shell follows (SIGWINCH, passed on by deputy), then checks that
    /// Ctrl-C interrupts a foreground job and not the shell.
    pub fn check_resize_and_interrupt(&self) {
        assert!(
            self.command(&["resize-window", "-t", "t", "-x", "120", "-y", "40"])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(300));
        self.keys(&["stty size", "Enter"]);
        self.wait_for("40 120", 1);
        self.keys(&["sleep 100", "Enter"]);
        std::thread::sleep(Duration::from_millis(300));
        self.keys(&["C-c"]);
        self.keys(&["echo still-$((6*7))", "Enter"]);
        self.wait_for("still-42", 1);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).status();
    }
}
