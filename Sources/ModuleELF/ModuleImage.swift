/// A module's ELF image as the kernel's loader receives it: decompressed when the file is
/// compressed, carrying only the signature that travels inside the image. For callers that
/// read a few facts from many modules and must not pay for a full `ModuleFile` parse.
public enum ModuleImage {
    /// Calls `body` with the ELF image of the module at `path` and the format the file was
    /// stored in. The bytes are valid only during the call.
    public static func withImage<Result>(
        path: String, _ body: (UnsafeRawBufferPointer, StoredForm) throws -> Result
    ) throws -> Result {
        let raw = try ModuleBytes.map(path: path)
        return try withExtendedLifetime(raw) {
            let compression = ModuleCompression.detect(raw.buffer)
            if compression == .none { return try body(raw.buffer, StoredForm(compression: .none, kernelRefusal: nil)) }
            let stored = StoredForm(compression: compression, kernelRefusal: compression.kernelRefusal(raw.buffer))
            let image = try decompressedImage(raw, format: compression, path: path)
            return try withExtendedLifetime(image) { try body(image.buffer, stored) }
        }
    }

    /// How a module file is stored, as far as loading it depends on that.
    public struct StoredForm: Sendable, Equatable {
        public var compression: ModuleCompression
        /// Why the kernel's own decompressor would refuse the file, when it would.
        public var kernelRefusal: KernelDecompressionRefusal?
    }

    /// The bytes to hand the kernel's `finit_module` for the module at `path`, and their
    /// format: the file as it is when it is uncompressed, or in `kernelDecompresses` (the one
    /// format the target kernel unpacks itself) and `handoff` leaves it to the kernel; else
    /// its ELF image decompressed here, as a user-space loader does.
    public static func bytesForLoading(
        path: String, kernelDecompresses: ModuleCompression, handoff: CompressedModuleHandoff = .kernel
    ) throws(ModuleReadError) -> (bytes: [UInt8], compression: ModuleCompression) {
        let raw = try ModuleBytes.map(path: path)
        let compression = ModuleCompression.detect(raw.buffer)
        if compression == .none || handoff.kernelUnpacks(compression, kernelDecompresses: kernelDecompresses) {
            return (Array(raw.buffer), compression)
        }
        let image = try decompressedImage(raw, format: compression, path: path)
        return (Array(image.buffer), .none)
    }

    /// The ELF image inside a compressed file. A signature appended after compressing sits
    /// outside the stream; the loader never sees it, so it is not part of the image.
    private static func decompressedImage(
        _ raw: ModuleBytes, format: ModuleCompression, path: String
    ) throws(ModuleReadError) -> ModuleBytes {
        var payload = raw.buffer
        if SignatureReader.hasMagic(raw.buffer),
            let outer = SignatureReader.read(raw.buffer, placement: .compressedThenSigned)
        {
            payload = UnsafeRawBufferPointer(rebasing: raw.buffer[..<outer.1])
        }
        return try Decompressor.decompress(payload, format: format, path: path)
    }

    /// The signature appended to an ELF image, read as libkmod reads it; nil when unsigned.
    public static func signature(in image: UnsafeRawBufferPointer) -> ModuleSignature? {
        SignatureReader.read(image, placement: .uncompressed)?.0
    }
}
