;; collect() starts config "count" fetches of config "url" at once (all open together), emits
;; each http_fetch answer as fetch_result (a handle >= 0 or an error code), then waits for each
;; started fetch and emits its status as fetch_status.
(module
  (import "monbridge" "emit_metric" (func $emit (param i32 i32 i32 f64 i32 i32) (result i32)))
  (import "monbridge" "config_value" (func $config_value (param i32 i32 i32 i32) (result i32)))
  (import "monbridge" "http_fetch" (func $fetch (param i32 i32) (result i32)))
  (import "monbridge" "http_status" (func $status (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (data (i32.const 16) "url")
  (data (i32.const 32) "count")
  (data (i32.const 48) "fetch_result")     ;; 12
  (data (i32.const 64) "fetch_status")     ;; 12
  (func (export "collect") (result i32)
    (local $len i32) (local $count i32) (local $i i32) (local $h i32)
    ;; the url at 1024 (at most 1000 bytes)
    (local.set $len (call $config_value (i32.const 16) (i32.const 3) (i32.const 1024) (i32.const 1000)))
    (if (i32.lt_s (local.get $len) (i32.const 0)) (then (return (i32.const 1))))
    ;; count: one digit or two
    (local.set $count (i32.const 1))
    (if (i32.ge_s (call $config_value (i32.const 32) (i32.const 5) (i32.const 128) (i32.const 2)) (i32.const 1))
      (then (local.set $count (i32.sub (i32.load8_u (i32.const 128)) (i32.const 48)))
            (if (i32.eq (call $config_value (i32.const 32) (i32.const 5) (i32.const 128) (i32.const 2)) (i32.const 2))
              (then (local.set $count (i32.add (i32.mul (local.get $count) (i32.const 10))
                                              (i32.sub (i32.load8_u (i32.const 129)) (i32.const 48))))))))
    ;; start them all; keep the handles at 2048
    (loop $start
      (local.set $h (call $fetch (i32.const 1024) (local.get $len)))
      (i32.store (i32.add (i32.const 2048) (i32.shl (local.get $i) (i32.const 2))) (local.get $h))
      (drop (call $emit (i32.const 0) (i32.const 48) (i32.const 12) (f64.convert_i32_s (local.get $h)) (i32.const 0) (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $start (i32.lt_s (local.get $i) (local.get $count))))
    ;; wait for each started one
    (local.set $i (i32.const 0))
    (loop $wait
      (local.set $h (i32.load (i32.add (i32.const 2048) (i32.shl (local.get $i) (i32.const 2)))))
      (if (i32.ge_s (local.get $h) (i32.const 0))
        (then (drop (call $emit (i32.const 0) (i32.const 64) (i32.const 12)
                              (f64.convert_i32_s (call $status (local.get $h))) (i32.const 0) (i32.const 0)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $wait (i32.lt_s (local.get $i) (local.get $count))))
    (i32.const 0)))
