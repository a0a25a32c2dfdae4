fn main() {
    // Compiles bpf/tcpretrans.bpf.c with clang against vnt's shared headers
    // and a committed vmlinux.h; the object lands in $OUT_DIR.
    if let Err(e) = vnt_ebpf::compile("bpf/tcpretrans.bpf.c") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
