import X509

/// The certificates a kernel is built to trust for module signatures: its built-in
/// `system_certificate_list` (the build's own signing key and `CONFIG_SYSTEM_TRUSTED_KEYS`),
/// read from an installed `vmlinuz` (x86 bzImage) or an uncompressed `vmlinux`.
enum KernelImageCertificates {
    /// x86 boot protocol: "HdrS" at 0x202 marks the setup header.
    static func isKernelImage(_ bytes: [UInt8]) -> Bool {
        isBzImage(bytes) || (bytes.count > 16 && bytes[0..<4].elementsEqual([0x7F, 0x45, 0x4C, 0x46]))
    }

    private static func isBzImage(_ bytes: [UInt8]) -> Bool {
        bytes.count > 0x250 && bytes[0x202..<0x206].elementsEqual(Array("HdrS".utf8))
    }

    static func read(_ bytes: [UInt8], path: String) throws(ModuleReadError) -> [Certificate] {
        guard isBzImage(bytes) else { return certificateList(in: bytes.withUnsafeBytes { $0 }) }
        let image = try decompressedKernel(bytes, path: path)
        return withExtendedLifetime(image) { certificateList(in: image.buffer) }
    }

    /// The compressed kernel inside a bzImage: `payload_offset`/`payload_length` (boot
    /// protocol 2.08+) from the start of the protected-mode code, after the setup sectors.
    private static func decompressedKernel(_ bytes: [UInt8], path: String) throws(ModuleReadError) -> ModuleBytes {
        func word(_ offset: Int) -> Int { Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 }
        func long(_ offset: Int) -> Int { word(offset) | word(offset + 2) << 16 }
        guard word(0x206) >= 0x208 else {
            throw ModuleReadError(path: path, .malformed("boot protocol \(String(word(0x206), radix: 16)) is older than 2.08 and has no payload fields"))
        }
        let setupSectors = bytes[0x1F1] == 0 ? 4 : Int(bytes[0x1F1])
        let start = (setupSectors + 1) * 512 + long(0x248)
        let length = long(0x24C)
        guard start >= 0, length > 0, start + length <= bytes.count else {
            throw ModuleReadError(path: path, .truncated("the kernel payload (offset \(start), \(length) bytes) is outside the file"))
        }
        let decompressed: Result<ModuleBytes, ModuleReadError> = bytes.withUnsafeBytes { all in
            let payload = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
            let format = ModuleCompression.detect(payload)
            guard format != .none else {
                return .failure(ModuleReadError(path: path, .malformed("the kernel payload is compressed in a format other than xz, zstd or gzip")))
            }
            do throws(ModuleReadError) {
                // The kernel's build appends the decompressed size (4 bytes) after the stream.
                return .success(try Decompressor.decompress(payload, format: format, path: path, trailingBytesAllowed: 4))
            } catch {
                return .failure(error)
            }
        }
        return try decompressed.get()
    }

    /// certs/system_certificates.S lays out the list as DER certificates back to back from
    /// an 8-byte boundary, then, at the next 8-byte boundary, its size as a 64-bit
    /// little-endian number. A run of certificates followed by its own size is the list.
    static func certificateList(in image: UnsafeRawBufferPointer) -> [Certificate] {
        func derLength(at offset: Int) -> Int? {
            guard offset + 4 <= image.count, image[offset] == 0x30, image[offset + 1] == 0x82 else { return nil }
            let length = Int(image[offset + 2]) << 8 | Int(image[offset + 3])
            return offset + 4 + length <= image.count ? length + 4 : nil
        }
        var start = 0
        while start + 8 <= image.count {
            defer { start += 8 }
            // A certificate's TBSCertificate is itself a long SEQUENCE.
            guard derLength(at: start) != nil, image[start + 4] == 0x30, image[start + 5] == 0x82 else { continue }
            var end = start
            var certificates: [Certificate] = []
            while let length = derLength(at: end),
                let certificate = try? Certificate(derEncoded: Array(image[end..<(end + length)]))
            {
                certificates.append(certificate)
                end += length
            }
            guard !certificates.isEmpty else { continue }
            let sizeOffset = (end + 7) & ~7
            guard sizeOffset + 8 <= image.count else { continue }
            let size = UInt64(littleEndian: image.loadUnaligned(fromByteOffset: sizeOffset, as: UInt64.self))
            if size == UInt64(end - start) { return certificates }
        }
        return []
    }
}
