;; An example monbridge collector in WebAssembly text (ABI version 1, see bridge/wasmhost.py).
;;
;; Each collection emits two series, both carrying the attribute `instance` read from the
;; plugin's config (key "instance", default "unknown"):
;;   example_collections   counter: how many collections ran (1, 2, 3, ...)
;;   example_temperature   gauge:   the config's "base" (a whole number, read as text through
;;                         config_value and converted digit by digit) plus 0.5
;;
;; Build: wasmtime.wat2wasm(text) (the host's tests do), or `wat2wasm` from wabt.
(module
  ;; --- what the host provides (module "monbridge") -------------------------------------
  (import "monbridge" "emit_metric"
    (func $emit_metric (param $kind i32) (param $name i32) (param $name_len i32)
                       (param $value f64) (param $attrs i32) (param $attrs_len i32) (result i32)))
  (import "monbridge" "config_value"
    (func $config_value (param $key i32) (param $key_len i32) (param $buf i32) (param $cap i32) (result i32)))
  (import "monbridge" "log" (func $log (param $level i32) (param $msg i32) (param $len i32) (result i32)))

  (memory (export "memory") 1)

  ;; --- constant data ----------------------------------------------------------------------
  (data (i32.const 16) "example_collections")      ;; 19 bytes
  (data (i32.const 48) "example_temperature")      ;; 19 bytes
  (data (i32.const 80) "instance")                 ;; 8 bytes: a config key and an attribute key
  (data (i32.const 96) "base")                     ;; 4 bytes: a config key
  (data (i32.const 112) "started")                 ;; 7 bytes: a log line
  (data (i32.const 128) "unknown")                 ;; 7 bytes: the default instance

  ;; The attributes are built at 1024: "instance" NUL <value> NUL (the value at most 200 bytes).
  (global $attrs_len (mut i32) (i32.const 0))
  (global $base (mut f64) (f64.const 0))
  (global $collections (mut f64) (f64.const 0))
  ;; A bump allocator for the host's copies (the config at init) from 4096 on.
  (global $heap (mut i32) (i32.const 4096))

  (func (export "monbridge_abi_version") (result i32) (i32.const 1))

  (func (export "alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    ;; grow the memory when the copy would not fit (a page is 64 KiB)
    (if (i32.gt_u (i32.add (local.get $ptr) (local.get $size)) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.lt_s (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1)))
                          (i32.const 0))
              (then (return (i32.const 0))))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.get $ptr))

  ;; init(config_ptr, config_len): the whole config as JSON; this plugin reads single keys
  ;; through config_value instead, so it builds its attributes and parses "base" here.
  (func (export "init") (param $config i32) (param $len i32) (result i32)
    (local $n i32) (local $i i32) (local $c i32)
    ;; "instance" NUL
    (memory.copy (i32.const 1024) (i32.const 80) (i32.const 8))
    (i32.store8 (i32.const 1032) (i32.const 0))
    ;; the instance's value after it (at most 200 bytes), or "unknown"
    (local.set $n (call $config_value (i32.const 80) (i32.const 8) (i32.const 1033) (i32.const 200)))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (memory.copy (i32.const 1033) (i32.const 128) (i32.const 7))
            (local.set $n (i32.const 7))))
    (if (i32.gt_s (local.get $n) (i32.const 200)) (then (return (i32.const 1))))  ;; too long: fail init
    (i32.store8 (i32.add (i32.const 1033) (local.get $n)) (i32.const 0))
    (global.set $attrs_len (i32.add (local.get $n) (i32.const 10)))
    ;; "base": digits as text (a JSON number), into 1536; non-digits end it
    (local.set $n (call $config_value (i32.const 96) (i32.const 4) (i32.const 1536) (i32.const 16)))
    (if (i32.gt_s (local.get $n) (i32.const 16)) (then (return (i32.const 2))))
    (block $done
      (loop $digit
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $c (i32.sub (i32.load8_u (i32.add (i32.const 1536) (local.get $i))) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $c) (i32.const 9)))
        (global.set $base (f64.add (f64.mul (global.get $base) (f64.const 10)) (f64.convert_i32_u (local.get $c))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digit)))
    (drop (call $log (i32.const 1) (i32.const 112) (i32.const 7)))
    (i32.const 0))

  ;; collect(): emit the two series; a negative answer from the host fails the collection.
  (func (export "collect") (result i32)
    (global.set $collections (f64.add (global.get $collections) (f64.const 1)))
    (if (i32.lt_s (call $emit_metric (i32.const 1) (i32.const 16) (i32.const 19) (global.get $collections)
                                     (i32.const 1024) (global.get $attrs_len)) (i32.const 0))
      (then (return (i32.const 1))))
    (if (i32.lt_s (call $emit_metric (i32.const 0) (i32.const 48) (i32.const 19)
                                     (f64.add (global.get $base) (f64.const 0.5))
                                     (i32.const 1024) (global.get $attrs_len)) (i32.const 0))
      (then (return (i32.const 2))))
    (i32.const 0))

  (func (export "shutdown") (result i32) (i32.const 0)))
