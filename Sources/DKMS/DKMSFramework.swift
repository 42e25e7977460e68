import Foundation
import NVBuildSupport

/// DKMS's signing settings as its framework.conf (and framework.conf.d/*.conf) set them:
/// plain `name=value` lines, read, never executed.
public enum DKMSFramework {
    public static let defaultKey = "/var/lib/dkms/mok.key"
    public static let defaultCertificate = "/var/lib/dkms/mok.pub"

    public static func signingSettings(configuration: String = "/etc/dkms/framework.conf") throws -> (key: String, certificate: String) {
        var key = defaultKey, certificate = defaultCertificate
        var files = [configuration]
        let directory = configuration + ".d"
        if let names = try? FileManager.default.contentsOfDirectory(atPath: directory) {
            files += names.filter { $0.hasSuffix(".conf") }.sorted().map { directory + "/" + $0 }
        }
        for file in files where FileManager.default.fileExists(atPath: file) {
            let text = try TextFile.read(file, kind: .environment, remedy: "fix or remove it, or sign with --sign-key and --sign-cert")
            for line in text.split(separator: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else { continue }
                let name = trimmed[..<equals]
                var value = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                    value = String(value.dropFirst().dropLast())
                }
                guard !value.isEmpty else { continue }
                if value.contains("$") || value.contains("`") {
                    throw UserError(.environment, "\(file): \(name) is set with shell expansion (\(value)), which nvbuild does not execute; give --sign-key and --sign-cert")
                }
                if name == "mok_signing_key" { key = value }
                if name == "mok_certificate" { certificate = value }
            }
        }
        return (key, certificate)
    }
}
