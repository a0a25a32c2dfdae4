fn main() {
    // Compiles bpf/tcpretrans.bpf.c with clang against vnt's shared headers
    // and a committed vmlinux.h; the object lands in $OUT_DIR, with the
    // Rust declarations of its programs and of `struct tcpretrans_event`
    // (generated from the object's BTF: the C is the one declaration).
    if let Err(e) = vnt_ebpf::compile_with_records("bpf/tcpretrans.bpf.c", &["tcpretrans_event"]) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
