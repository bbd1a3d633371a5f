;; collect() tries to create and write two files through WASI, relative to the first preopened
;; directory (fd 3): "inside.txt" and "../outside.txt"; it emits each step's WASI errno as
;; open_errno / write_errno with attribute file=inside|outside (0 is success).
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "monbridge" "emit_metric" (func $emit (param i32 i32 i32 f64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (data (i32.const 16) "inside.txt")          ;; 10
  (data (i32.const 32) "../outside.txt")      ;; 14
  (data (i32.const 64) "open_errno")          ;; 10
  (data (i32.const 80) "write_errno")         ;; 11
  (data (i32.const 96) "file\00inside\00")    ;; 12
  (data (i32.const 112) "file\00outside\00")  ;; 13
  (data (i32.const 128) "written by wasm\0a") ;; 16
  (func $try (param $path i32) (param $len i32) (param $attrs i32) (param $attrs_len i32)
    (local $err i32)
    ;; path_open(dirfd 3, follow symlinks, path, O_CREAT, rights fd_write, 0, fdflags 0, &fd at 512)
    (local.set $err (call $path_open (i32.const 3) (i32.const 1) (local.get $path) (local.get $len)
                                      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 512)))
    (drop (call $emit (i32.const 0) (i32.const 64) (i32.const 10) (f64.convert_i32_u (local.get $err))
                       (local.get $attrs) (local.get $attrs_len)))
    (if (i32.eqz (local.get $err))
      (then
        ;; one iovec at 520: {ptr 128, len 16}
        (i32.store (i32.const 520) (i32.const 128))
        (i32.store (i32.const 524) (i32.const 16))
        (drop (call $emit (i32.const 0) (i32.const 80) (i32.const 11)
                (f64.convert_i32_u (call $fd_write (i32.load (i32.const 512)) (i32.const 520) (i32.const 1) (i32.const 528)))
                (local.get $attrs) (local.get $attrs_len))))))
  (func (export "collect") (result i32)
    (call $try (i32.const 16) (i32.const 10) (i32.const 96) (i32.const 12))
    (call $try (i32.const 32) (i32.const 14) (i32.const 112) (i32.const 13))
    (i32.const 0)))
