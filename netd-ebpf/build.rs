// bpf-linker is an undeclared build tool of this crate: rebuild when it is replaced.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
