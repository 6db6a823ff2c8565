//! Linker flags of the eBPF object that belong with its code rather than with the build tool.
//!
//! bpf-linker asks LLVM to expand `memcpy` "in order" by default, which also stops LLVM from
//! expanding any `memset` inline: every zeroed key, padding or address then becomes a call to
//! a byte-by-byte `memset` loop, on every packet. LLVM's ordinary expansion of both (up to 128
//! stores) is what the programs want, and what the verifier accepts.
fn main() {
    println!("cargo::rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
