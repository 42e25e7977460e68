import Foundation

/// How the target's module loader (modprobe/insmod) gives a compressed module file to the
/// kernel. kmod 30 and earlier decompress it in user space and call init_module; kmod 31
/// and later hand the file itself to finit_module with MODULE_INIT_COMPRESSED_FILE when
/// the kernel unpacks that format (CONFIG_MODULE_DECOMPRESS, /sys/module/compression),
/// and the kernel's own decompressor then decides.
public enum CompressedModuleHandoff: String, Sendable, Codable, CaseIterable {
    case userSpace = "user-space"
    case kernel

    /// The handoff of the kmod release `version`: the kernel's own decompression from 31 on.
    public init(kmodVersion version: Int) {
        self = version >= 31 ? .kernel : .userSpace
    }

    /// The version `kmod --version` prints first ("kmod version 30"); nil when it prints none.
    public static func kmodVersion(fromVersionOutput text: String) -> Int? {
        guard let line = text.split(separator: "\n").first, line.hasPrefix("kmod version ") else { return nil }
        return Int(line.dropFirst("kmod version ".count).prefix { $0.isNumber })
    }

    /// Whether a file stored as `stored` reaches the kernel still compressed.
    public func kernelUnpacks(_ stored: ModuleCompression, kernelDecompresses: ModuleCompression) -> Bool {
        self == .kernel && stored != .none && stored == kernelDecompresses
    }
}

/// Why the kernel's module decompressor cannot unpack a stored file it is handed.
public struct KernelDecompressionRefusal: Sendable, Equatable, Codable {
    /// The decoder's status, as the kernel prints it ("decompression failed with status N").
    public var status: Int
    /// Which property of the file the kernel's decoder does not support.
    public var reason: String
    public var remedy: String
}

extension ModuleCompression {
    /// What the kernel's decoder for this format refuses in `file` (the file as stored,
    /// its signature appended after compressing included), nil when it would unpack it.
    /// The kernel's xz decoder (XZ Embedded, lib/xz) is built without XZ_DEC_ANY_CHECK:
    /// a stream whose integrity check is not CRC32 or none stops at its header with
    /// XZ_OPTIONS_ERROR (6). xz's own default is CRC64; the kernel's build uses
    /// `--check=crc32`, DKMS 3.0 the default.
    public func kernelRefusal(_ file: UnsafeRawBufferPointer) -> KernelDecompressionRefusal? {
        guard self == .xz, file.count >= 8 else { return nil }
        // Stream header: 6 magic bytes, then the stream flags: 0x00 and the check type.
        let check = file[7] & 0x0F
        guard file[6] == 0, file[7] & 0xF0 == 0, check > 1 else { return nil }
        let name = [4: "CRC64", 10: "SHA-256"][Int(check)] ?? "check type \(check)"
        return KernelDecompressionRefusal(
            status: 6,
            reason: "its xz stream carries a \(name) integrity check; the kernel's xz decoder accepts CRC32 or none",
            remedy: "compress modules with `xz --check=crc32` (as the kernel's own build does), or load them with a modprobe that decompresses in user space (kmod 30 and earlier)")
    }
}
