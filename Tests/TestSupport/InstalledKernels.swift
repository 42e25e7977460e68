import Foundation

/// The standard Debian 6.1 and 6.12 kernels scripts/setup installs (the newest of each
/// series the package index offered), found on the machine rather than named here.
public enum InstalledKernels {
    public static let standard: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/lib/modules")) ?? []
        func newest(_ pattern: String) -> String? {
            names.filter { $0.range(of: pattern, options: .regularExpression) != nil }
                .sorted { $0.compare($1, options: .numeric) == .orderedAscending }.last
        }
        return [newest(#"^6\.1\.0-[0-9]+-amd64$"#), newest(#"^6\.12\.[0-9]+\+deb12-amd64$"#)].compactMap { $0 }
    }()
}
