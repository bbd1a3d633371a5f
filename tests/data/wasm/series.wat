;; collect() reports config "count" series of bench_series (a gauge), attribute id="<i>" in
;; decimal, with fresh values each round: value = round * count + i. It writes them all as one
;; emit_metrics batch (the records' layout is in bridge/wasmhost.py) from 65536 on and hands the
;; host the whole batch in one call. A benchmark's and the bounds' module.
(module
  (import "monbridge" "emit_metrics" (func $emit_metrics (param i32 i32) (result i32)))
  (import "monbridge" "config_value" (func $config_value (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "count")          ;; 5
  (data (i32.const 32) "bench_series")   ;; 12
  (global $count (mut i32) (i32.const 0))
  (global $round (mut i32) (i32.const 0))
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  ;; count: decimal digits of the config value (at most 9); memory for a batch of that many
  ;; records (at most 38 bytes each) after the first page
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
    (if (i32.lt_s (memory.grow (i32.add (i32.shr_u (i32.mul (global.get $count) (i32.const 38)) (i32.const 16))
                                        (i32.const 1)))
                  (i32.const 0))
      (then (return (i32.const 3))))
    (i32.const 0))
  ;; the digits of $v, most significant first, at $at; returns how many
  (func $decimal (param $v i32) (param $at i32) (result i32)
    (local $len i32) (local $rest i32) (local $p i32)
    (local.set $rest (local.get $v))
    (local.set $len (i32.const 1))
    (block $done (loop $count_digits
      (br_if $done (i32.lt_u (local.get $rest) (i32.const 10)))
      (local.set $rest (i32.div_u (local.get $rest) (i32.const 10)))
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (br $count_digits)))
    (local.set $p (i32.add (local.get $at) (local.get $len)))
    (loop $write
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $write (i32.gt_u (local.get $p) (local.get $at))))
    (local.get $len))
  (func (export "collect") (result i32)
    (local $i i32) (local $p i32) (local $digits i32)
    (global.set $round (i32.add (global.get $round) (i32.const 1)))
    (local.set $p (i32.const 65536))
    (block $done (loop $each
      (br_if $done (i32.ge_u (local.get $i) (global.get $count)))
      ;; record: kind u8 | name_len u8 | attrs_len u16 | value f64 | name | attrs
      (i32.store8 (local.get $p) (i32.const 0))
      (i32.store8 offset=1 (local.get $p) (i32.const 12))
      (f64.store offset=4 (local.get $p)
        (f64.convert_i32_u (i32.add (i32.mul (global.get $round) (global.get $count)) (local.get $i))))
      (memory.copy (i32.add (local.get $p) (i32.const 12)) (i32.const 32) (i32.const 12))
      ;; attrs: "id" NUL digits NUL
      (i32.store8 offset=24 (local.get $p) (i32.const 105))   ;; i
      (i32.store8 offset=25 (local.get $p) (i32.const 100))   ;; d
      (i32.store8 offset=26 (local.get $p) (i32.const 0))
      (local.set $digits (call $decimal (local.get $i) (i32.add (local.get $p) (i32.const 27))))
      (i32.store8 (i32.add (i32.add (local.get $p) (i32.const 27)) (local.get $digits)) (i32.const 0))
      (i32.store16 offset=2 (local.get $p) (i32.add (local.get $digits) (i32.const 4)))
      (local.set $p (i32.add (local.get $p) (i32.add (i32.const 28) (local.get $digits))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $each)))
    ;; the answer (records taken, or an error code) is not looked at: the host counts what it drops
    (drop (call $emit_metrics (i32.const 65536) (i32.sub (local.get $p) (i32.const 65536))))
    (i32.const 0)))
