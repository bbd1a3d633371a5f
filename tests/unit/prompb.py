"""Prometheus' remote-write ``prompb`` messages (types.proto and remote.proto of Prometheus 2.42),
declared from their field numbers, for tests to read the hand-written encoder's bytes with
protobuf's own decoder."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def _prompb() -> dict[str, type]:
    fd = descriptor_pb2.FileDescriptorProto(name="monbridge_test_prompb.proto", package="monbridge_test_prompb",
                                            syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".monbridge_test_prompb.{type_name}"

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("Label", ("name", 1, F.TYPE_STRING, opt, ""), ("value", 2, F.TYPE_STRING, opt, ""))
    message("Sample", ("value", 1, F.TYPE_DOUBLE, opt, ""), ("timestamp", 2, F.TYPE_INT64, opt, ""))
    message("BucketSpan", ("offset", 1, F.TYPE_SINT32, opt, ""), ("length", 2, F.TYPE_UINT32, opt, ""))
    message("Histogram", ("count_int", 1, F.TYPE_UINT64, opt, ""), ("sum", 3, F.TYPE_DOUBLE, opt, ""),
            ("schema", 4, F.TYPE_SINT32, opt, ""), ("zero_threshold", 5, F.TYPE_DOUBLE, opt, ""),
            ("zero_count_int", 6, F.TYPE_UINT64, opt, ""), ("negative_spans", 8, F.TYPE_MESSAGE, rep, "BucketSpan"),
            ("negative_deltas", 9, F.TYPE_SINT64, rep, ""), ("positive_spans", 11, F.TYPE_MESSAGE, rep, "BucketSpan"),
            ("positive_deltas", 12, F.TYPE_SINT64, rep, ""), ("timestamp", 15, F.TYPE_INT64, opt, ""))
    message("TimeSeries", ("labels", 1, F.TYPE_MESSAGE, rep, "Label"), ("samples", 2, F.TYPE_MESSAGE, rep, "Sample"),
            ("histograms", 4, F.TYPE_MESSAGE, rep, "Histogram"))
    message("WriteRequest", ("timeseries", 1, F.TYPE_MESSAGE, rep, "TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"monbridge_test_prompb.{n}"))
            for n in ("WriteRequest",)}


WriteRequest = _prompb()["WriteRequest"]
