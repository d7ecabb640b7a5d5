//! `containerd-shim-skiff-v2`: the binary containerd starts for runtime `io.containerd.skiff.v2`.

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", skiff_shim::RUNTIME_ID);
            std::process::exit(1);
        }
    };
    if flags.action.is_empty() && !flags.info && !flags.version {
        if let Err(e) = skiff_shim::server::serve(&flags) {
            eprintln!("{}: {e}", skiff_shim::RUNTIME_ID);
            std::process::exit(1);
        }
        return;
    }
    if flags.version {
        println!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        return;
    }
    containerd_shim::run::<skiff_shim::Shim>(skiff_shim::RUNTIME_ID, None);
}
