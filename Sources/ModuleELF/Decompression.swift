import CLzma
import CZlib
import CZstd

/// How a module file is stored on disk.
public enum ModuleCompression: String, Sendable, Codable, CaseIterable {
    case none, xz, zstd, gzip

    /// Recognises the format by magic bytes, as libkmod does, not by the file name.
    static func detect(_ bytes: UnsafeRawBufferPointer) -> ModuleCompression {
        // Byte comparisons, no arrays: this runs once per module file.
        let count = bytes.count
        if count >= 6, bytes[0] == 0xFD, bytes[1] == 0x37, bytes[2] == 0x7A, bytes[3] == 0x58, bytes[4] == 0x5A, bytes[5] == 0x00 {
            return .xz
        }
        if count >= 4, bytes[0] == 0x28, bytes[1] == 0xB5, bytes[2] == 0x2F, bytes[3] == 0xFD { return .zstd }
        if count >= 2, bytes[0] == 0x1F, bytes[1] == 0x8B { return .gzip }
        return .none
    }
}

/// Decompressed images larger than this are refused: no real module comes near it,
/// and a hostile stream must not exhaust memory.
public let maximumDecompressedSize = 1 << 30

enum Decompressor {
    /// The input must end where the stream ends, as `xz -t`, `zstd -t` and `gzip -t` demand
    /// and libkmod's readers (which decode on to the end of the file) require. Callers strip
    /// a module signature appended after compressing before they get here: that one is
    /// read, and reported as outside what the kernel checks.
    static func checkNothingFollows(
        _ input: UnsafeRawBufferPointer, consumed: Int, format: ModuleCompression, path: String, allowed: Int = 0
    ) throws(ModuleReadError) {
        let rest = input.count - consumed
        guard rest > allowed else { return }
        // xz allows stream padding: NUL bytes in multiples of four.
        if format == .xz, rest % 4 == 0, UnsafeRawBufferPointer(rebasing: input[consumed...]).allSatisfy({ $0 == 0 }) { return }
        throw ModuleReadError(
            path: path,
            .decompression(format: format, detail: "\(rest) byte\(rest == 1 ? "" : "s") of trailing data after the end of the stream (at offset \(consumed)); recompress the module"))
    }

    /// `trailingBytesAllowed` is for a kernel image's payload, which the kernel's build
    /// follows with the 4-byte decompressed size (size_append); modules allow none.
    static func decompress(
        _ input: UnsafeRawBufferPointer, format: ModuleCompression, path: String, trailingBytesAllowed: Int = 0
    ) throws(ModuleReadError) -> ModuleBytes {
        switch format {
        case .none: preconditionFailure("nothing to decompress")
        case .xz: return try xz(input, path: path, trailingBytesAllowed: trailingBytesAllowed)
        case .zstd: return try zstd(input, path: path, trailingBytesAllowed: trailingBytesAllowed)
        case .gzip: return try gzip(input, path: path, trailingBytesAllowed: trailingBytesAllowed)
        }
    }

    /// The uncompressed size recorded in the stream's index, used only to size the buffer.
    private static func xzSizeHint(_ input: UnsafeRawBufferPointer) -> Int {
        guard input.count > 24 else { return input.count * 4 }
        let footer = input.count - 12
        var flags = lzma_stream_flags()
        let footerStatus = input.baseAddress!.advanced(by: footer).withMemoryRebound(to: UInt8.self, capacity: 12) {
            lzma_stream_footer_decode(&flags, $0)
        }
        guard footerStatus == LZMA_OK, flags.backward_size <= UInt64(footer) else { return input.count * 4 }
        let indexStart = footer - Int(flags.backward_size)
        var index: OpaquePointer? = nil
        var memlimit: UInt64 = 1 << 24
        var position = indexStart
        let status = input.baseAddress!.withMemoryRebound(to: UInt8.self, capacity: input.count) {
            lzma_index_buffer_decode(&index, &memlimit, nil, $0, &position, footer)
        }
        guard status == LZMA_OK, let index else { return input.count * 4 }
        defer { lzma_index_end(index, nil) }
        let size = lzma_index_uncompressed_size(index)
        return size > UInt64(maximumDecompressedSize) ? maximumDecompressedSize : Int(size)
    }

    private static func xz(_ input: UnsafeRawBufferPointer, path: String, trailingBytesAllowed: Int) throws(ModuleReadError) -> ModuleBytes {
        var stream = lzma_stream()
        guard lzma_stream_decoder(&stream, 1 << 28, 0) == LZMA_OK else {
            throw ModuleReadError(path: path, .decompression(format: .xz, detail: "decoder initialisation failed"))
        }
        defer { lzma_end(&stream) }
        // One byte of slack so the decoder's end-of-stream is seen without another grow.
        var output = ModuleBytes.Growable(capacityHint: xzSizeHint(input) + 1, limit: maximumDecompressedSize)
        stream.next_in = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_in = input.count
        while true {
            if output.used == output.capacity, !output.grow() {
                output.discard()
                throw ModuleReadError(path: path, .tooLarge(limit: maximumDecompressedSize))
            }
            stream.next_out = output.base.advanced(by: output.used).assumingMemoryBound(to: UInt8.self)
            stream.avail_out = output.capacity - output.used
            let before = stream.avail_out
            let status = lzma_code(&stream, LZMA_FINISH)
            output.used += before - stream.avail_out
            if status == LZMA_STREAM_END {
                do {
                    try checkNothingFollows(input, consumed: input.count - stream.avail_in, format: .xz, path: path, allowed: trailingBytesAllowed)
                } catch {
                    output.discard()
                    throw error
                }
                return output.finish()
            }
            if status == LZMA_OK { continue }
            if status == LZMA_BUF_ERROR, stream.avail_out > 0 {
                output.discard()
                throw ModuleReadError(path: path, .decompression(format: .xz, detail: "stream ends early (truncated file)"))
            }
            if status == LZMA_BUF_ERROR { continue }
            output.discard()
            throw ModuleReadError(path: path, .decompression(format: .xz, detail: lzmaMessage(status)))
        }
    }

    private static func lzmaMessage(_ status: lzma_ret) -> String {
        switch status {
        case LZMA_FORMAT_ERROR: return "not an xz stream"
        case LZMA_OPTIONS_ERROR: return "unsupported options in the stream header"
        case LZMA_DATA_ERROR: return "compressed data is corrupt"
        case LZMA_MEM_ERROR, LZMA_MEMLIMIT_ERROR: return "the stream needs more memory than allowed"
        default: return "liblzma error \(status.rawValue)"
        }
    }

    private static func zstd(_ input: UnsafeRawBufferPointer, path: String, trailingBytesAllowed: Int) throws(ModuleReadError) -> ModuleBytes {
        let declared = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        let hint = declared >= UInt64(maximumDecompressedSize) ? input.count * 4 : Int(declared)
        guard let context = ZSTD_createDStream() else {
            throw ModuleReadError(path: path, .decompression(format: .zstd, detail: "decoder initialisation failed"))
        }
        defer { ZSTD_freeDStream(context) }
        ZSTD_initDStream(context)
        var output = ModuleBytes.Growable(capacityHint: hint + 1, limit: maximumDecompressedSize)
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        while true {
            if output.used == output.capacity, !output.grow() {
                output.discard()
                throw ModuleReadError(path: path, .tooLarge(limit: maximumDecompressedSize))
            }
            var target = ZSTD_outBuffer(dst: output.base, size: output.capacity, pos: output.used)
            let before = target.pos
            let status = ZSTD_decompressStream(context, &target, &source)
            output.used = target.pos
            if ZSTD_isError(status) != 0 {
                output.discard()
                throw ModuleReadError(path: path, .decompression(format: .zstd, detail: String(cString: ZSTD_getErrorName(status))))
            }
            if status == 0 {
                do {
                    try checkNothingFollows(input, consumed: source.pos, format: .zstd, path: path, allowed: trailingBytesAllowed)
                } catch {
                    output.discard()
                    throw error
                }
                return output.finish()
            }
            if source.pos == source.size, target.pos == before, target.pos < target.size {
                output.discard()
                throw ModuleReadError(path: path, .decompression(format: .zstd, detail: "stream ends early (truncated file)"))
            }
        }
    }

    private static func gzip(_ input: UnsafeRawBufferPointer, path: String, trailingBytesAllowed: Int) throws(ModuleReadError) -> ModuleBytes {
        var stream = z_stream()
        // 16 + 15: a gzip wrapper around a 32 KiB window.
        guard inflateInit2_(&stream, 16 + 15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw ModuleReadError(path: path, .decompression(format: .gzip, detail: "decoder initialisation failed"))
        }
        defer { inflateEnd(&stream) }
        var hint = input.count * 4
        if input.count >= 18 {
            // ISIZE trailer: the uncompressed size modulo 2^32.
            let trailer = input.loadUnaligned(fromByteOffset: input.count - 4, as: UInt32.self)
            hint = Int(UInt32(littleEndian: trailer))
        }
        var output = ModuleBytes.Growable(capacityHint: hint + 1, limit: maximumDecompressedSize)
        var remaining = input.count
        var next = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        while true {
            if output.used == output.capacity, !output.grow() {
                output.discard()
                throw ModuleReadError(path: path, .tooLarge(limit: maximumDecompressedSize))
            }
            let inChunk = min(remaining, Int(UInt32.max))
            stream.next_in = next
            stream.avail_in = UInt32(inChunk)
            let outChunk = min(output.capacity - output.used, Int(UInt32.max))
            stream.next_out = output.base.advanced(by: output.used).assumingMemoryBound(to: UInt8.self)
            stream.avail_out = UInt32(outChunk)
            let status = inflate(&stream, Z_NO_FLUSH)
            let consumed = inChunk - Int(stream.avail_in)
            remaining -= consumed
            next = next?.advanced(by: consumed)
            let produced = outChunk - Int(stream.avail_out)
            output.used += produced
            if status == Z_STREAM_END {
                do {
                    try checkNothingFollows(input, consumed: input.count - remaining, format: .gzip, path: path, allowed: trailingBytesAllowed)
                } catch {
                    output.discard()
                    throw error
                }
                return output.finish()
            }
            if status == Z_OK { continue }
            if status == Z_BUF_ERROR, remaining > 0 || stream.avail_out == 0 { continue }
            output.discard()
            let detail = status == Z_BUF_ERROR
                ? "stream ends early (truncated file)"
                : (stream.msg.map { String(cString: $0) } ?? "zlib error \(status)")
            throw ModuleReadError(path: path, .decompression(format: .gzip, detail: detail))
        }
    }
}
