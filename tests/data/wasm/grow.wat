;; collect() grows its memory by 1 MiB at a time until memory.grow fails, then traps.
(module
  (memory (export "memory") 1)
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "collect") (result i32)
    (loop $more (br_if $more (i32.ge_s (memory.grow (i32.const 16)) (i32.const 0))))
    unreachable))
