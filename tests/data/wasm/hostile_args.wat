;; collect() calls the host functions with bad arguments and emits each answer, in order, as
;; the gauge "answer" (no attributes): out-of-bounds and negative pointers, lengths beyond their
;; bounds, a bad kind, bad names, bad attribute encodings, bad UTF-8, unknown handles and keys,
;; an import outside its export, then one valid emit (0), and floods the log.
(module
  (import "monbridge" "emit_metric" (func $emit (param i32 i32 i32 f64 i32 i32) (result i32)))
  (import "monbridge" "config_value" (func $config_value (param i32 i32 i32 i32) (result i32)))
  (import "monbridge" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "monbridge" "http_status" (func $status (param i32) (result i32)))
  (import "monbridge" "http_close" (func $close (param i32) (result i32)))
  (import "monbridge" "alert_set" (func $alert_set (param i32 i32 i32 i32 i32) (result i32)))
  (import "monbridge" "raise_alert" (func $raise (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "answer")            ;; 6
  (data (i32.const 32) "9bad")              ;; 4: not a name
  (data (i32.const 48) "\ff\fe")            ;; 2: not UTF-8
  (data (i32.const 64) "k\00v")             ;; 3: a pair without its closing NUL
  (data (i32.const 80) "k=\00v\00")         ;; 5: a key that is not a name
  (data (i32.const 96) "nokey")             ;; 5
  (data (i32.const 112) "printed to stdout\0a") ;; 18
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (func $answer (param $v i32)
    (drop (call $emit (i32.const 0) (i32.const 16) (i32.const 6) (f64.convert_i32_s (local.get $v)) (i32.const 0) (i32.const 0))))
  (func (export "collect") (result i32)
    (local $i i32)
    (call $answer (call $emit (i32.const 0) (i32.const 65530) (i32.const 10) (f64.const 1) (i32.const 0) (i32.const 0)))  ;; -1 past the end
    (call $answer (call $emit (i32.const 0) (i32.const -8) (i32.const 4) (f64.const 1) (i32.const 0) (i32.const 0)))      ;; -1 negative
    (call $answer (call $emit (i32.const 0) (i32.const 16) (i32.const 100000) (f64.const 1) (i32.const 0) (i32.const 0))) ;; -3 too long
    (call $answer (call $emit (i32.const 7) (i32.const 16) (i32.const 6) (f64.const 1) (i32.const 0) (i32.const 0)))      ;; -2 kind
    (call $answer (call $emit (i32.const 0) (i32.const 32) (i32.const 4) (f64.const 1) (i32.const 0) (i32.const 0)))      ;; -2 name
    (call $answer (call $emit (i32.const 0) (i32.const 48) (i32.const 2) (f64.const 1) (i32.const 0) (i32.const 0)))      ;; -2 UTF-8
    (call $answer (call $emit (i32.const 0) (i32.const 16) (i32.const 6) (f64.const 1) (i32.const 64) (i32.const 3)))     ;; -2 pairs
    (call $answer (call $emit (i32.const 0) (i32.const 16) (i32.const 6) (f64.const 1) (i32.const 80) (i32.const 5)))     ;; -2 key
    (call $answer (call $emit (i32.const 0) (i32.const 16) (i32.const 6) (f64.const 1) (i32.const 0) (i32.const 5000)))   ;; -3 attrs
    (call $answer (call $config_value (i32.const 96) (i32.const 5) (i32.const 0) (i32.const 0)))                          ;; -9 no key
    (call $answer (call $config_value (i32.const 16) (i32.const 6) (i32.const 65000) (i32.const 1000)))                   ;; -1 buffer (config {"answer": ...})
    (call $answer (call $status (i32.const 3)))                                                                           ;; -2 handle
    (call $answer (call $close (i32.const -1)))                                                                           ;; -2 handle
    (call $answer (call $alert_set (i32.const 0) (i32.const 16) (i32.const 6) (i32.const 16) (i32.const 6)))              ;; -10 not now
    (call $answer (call $raise (i32.const 16) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))) ;; -10 collector
    (call $answer (call $log (i32.const 9) (i32.const 16) (i32.const 6)))                                                 ;; -2 level
    (call $answer (call $emit (i32.const 0) (i32.const 16) (i32.const 6) (f64.const 42) (i32.const 0) (i32.const 0)))     ;; 0
    ;; 25 log lines: 20 pass, 5 are dropped (-4)
    (loop $flood
      (call $answer (call $log (i32.const 1) (i32.const 112) (i32.const 17)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $flood (i32.lt_s (local.get $i) (i32.const 25))))
    ;; stdout: one iovec at 256 {112, 18}
    (i32.store (i32.const 256) (i32.const 112))
    (i32.store (i32.const 260) (i32.const 18))
    (call $answer (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 264)))                           ;; 0
    (i32.const 0)))
