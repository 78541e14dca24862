//! `keelctl`: see the library for what it does; this only wires the
//! process's arguments, environment and streams to it.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStringExt;

fn main() {
    // Keys may be any bytes, but flags are text: arguments that are not
    // UTF-8 are read lossily.
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| String::from_utf8(a.into_vec()).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        .collect();
    let env: Vec<(String, String)> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    // Not locked: `watch -i` reads stdin on a thread of its own.
    let mut stdin = std::io::stdin();
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let io = keel_ctl::Io { stdout: &mut stdout, stderr: &mut stderr, stdin: &mut stdin, stderr_is_terminal };
    let code = keel_ctl::run(&args, env, io);
    std::process::exit(code);
}
