//! `skiff` binary: a thin front-end over the `skiff` library.
fn main() {
    std::process::exit(skiff::cli::main());
}
