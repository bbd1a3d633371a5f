;; collect() emits config "count" series of bench_series (a gauge), attribute id="<i>" in decimal,
;; with fresh values each round: value = round * count + i. A benchmark's and the bounds' module.
(module
  (import "monbridge" "emit_metric" (func $emit (param i32 i32 i32 f64 i32 i32) (result i32)))
  (import "monbridge" "config_value" (func $config_value (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "count")          ;; 5
  (data (i32.const 32) "bench_series")   ;; 12
  (data (i32.const 64) "id\00")          ;; the attributes: "id" NUL <digits> NUL, built at 64
  (global $count (mut i32) (i32.const 0))
  (global $round (mut i32) (i32.const 0))
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  ;; count: decimal digits of the config value (at most 9)
  (func (export "init") (param i32 i32) (result i32)
    (local $n i32) (local $i i32)
    (local.set $n (call $config_value (i32.const 16) (i32.const 5) (i32.const 512) (i32.const 9)))
    (if (i32.lt_s (local.get $n) (i32.const 1)) (then (return (i32.const 1))))
    (if (i32.gt_s (local.get $n) (i32.const 9)) (then (return (i32.const 2))))
    (loop $digit
      (global.set $count (i32.add (i32.mul (global.get $count) (i32.const 10))
                                  (i32.sub (i32.load8_u (i32.add (i32.const 512) (local.get $i))) (i32.const 48))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $digit (i32.lt_s (local.get $i) (local.get $n))))
    (i32.const 0))
  ;; writes i in decimal at 67 followed by NUL; returns the attributes' length
  (func $attrs (param $i i32) (result i32)
    (local $len i32) (local $v i32) (local $p i32)
    (local.set $v (local.get $i))
    (local.set $len (i32.const 1))
    (block $done (loop $count_digits
      (br_if $done (i32.lt_u (local.get $v) (i32.const 10)))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (br $count_digits)))
    (local.set $p (i32.add (i32.const 66) (local.get $len)))   ;; the last digit's place
    (i32.store8 (i32.add (local.get $p) (i32.const 1)) (i32.const 0))
    (local.set $v (local.get $i))
    (loop $write
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (br_if $write (i32.ge_u (local.get $p) (i32.const 67))))
    (i32.add (local.get $len) (i32.const 4)))
  (func (export "collect") (result i32)
    (local $i i32)
    (global.set $round (i32.add (global.get $round) (i32.const 1)))
    (block $done (loop $each
      (br_if $done (i32.ge_u (local.get $i) (global.get $count)))
      (br_if $done (i32.lt_s
        (call $emit (i32.const 0) (i32.const 32) (i32.const 12)
              (f64.convert_i32_u (i32.add (i32.mul (global.get $round) (global.get $count)) (local.get $i)))
              (i32.const 64) (call $attrs (local.get $i)))
        (i32.const 0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $each)))
    (i32.const 0)))
