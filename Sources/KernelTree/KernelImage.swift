import Foundation

/// What of a kernel's image package is installed beside its headers. Headers alone
/// (`linux-headers-*`) give a build tree, enough to probe and build; verifying a
/// module against the kernel's modules and loading it under qemu need the image
/// (`linux-image-*`, signed or `-unsigned`): modules, `modules.dep`, `vmlinuz`.
public struct KernelImage: Sendable, Equatable, Codable {
    /// `/lib/modules/<release>/modules.dep` exists: the image's modules are installed.
    public var hasModules: Bool
    /// `/boot/vmlinuz-<release>` exists: the kernel can be booted under qemu.
    public var hasKernelImage: Bool
    /// `/boot/System.map-<release>` exists.
    public var hasSystemMap: Bool

    public var isComplete: Bool { hasModules && hasKernelImage }

    public init(release: String, moduleRoot: String = "/lib/modules", bootDirectory: String = "/boot") {
        let exists = { FileManager.default.fileExists(atPath: $0) }
        hasModules = exists("\(moduleRoot)/\(release)/modules.dep")
        hasKernelImage = exists("\(bootDirectory)/vmlinuz-\(release)")
        hasSystemMap = exists("\(bootDirectory)/System.map-\(release)")
    }

    /// One line for a kernel whose image is not (fully) installed: what is missing,
    /// what cannot be done without it, and the package that provides it.
    public func problem(release: String) -> String? {
        guard !isComplete else { return nil }
        let missing = [hasModules ? nil : "modules", hasKernelImage ? nil : "vmlinuz"].compactMap { $0 }.joined(separator: " and ")
        return "headers only (no \(missing)): probe and build work, modules verify/try need "
            + "apt-get install linux-image-\(release) (or linux-image-\(release)-unsigned)"
    }
}
