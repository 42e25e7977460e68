import DKMS
import Foundation
import NVBuildSupport
import Testing

/// DKMS's signing settings read from framework.conf and framework.conf.d, never executed.
@Suite struct FrameworkTests {
    func scratch() throws -> String {
        let path = NSTemporaryDirectory() + "dkms-framework-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path + "/framework.conf.d", withIntermediateDirectories: true)
        return path
    }

    @Test func defaultsWhenNothingIsSet() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try "# mok_signing_key=/elsewhere.key\nsign_tool=/x\n".write(toFile: root + "/framework.conf", atomically: true, encoding: .utf8)
        let settings = try DKMSFramework.signingSettings(configuration: root + "/framework.conf")
        #expect(settings.key == "/var/lib/dkms/mok.key" && settings.certificate == "/var/lib/dkms/mok.pub")
        // A missing framework.conf is DKMS's defaults too.
        let absent = try DKMSFramework.signingSettings(configuration: root + "/absent.conf")
        #expect(absent.key == DKMSFramework.defaultKey)
    }

    @Test func frameworkConfThenConfDInNameOrder() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try "mok_signing_key=\"/keys/a.key\"\nmok_certificate='/keys/a.der'\n".write(toFile: root + "/framework.conf", atomically: true, encoding: .utf8)
        try "mok_certificate=/keys/b.der\n".write(toFile: root + "/framework.conf.d/20-b.conf", atomically: true, encoding: .utf8)
        try "mok_certificate=/keys/ignored.der\n".write(toFile: root + "/framework.conf.d/30-c.txt", atomically: true, encoding: .utf8)
        let settings = try DKMSFramework.signingSettings(configuration: root + "/framework.conf")
        #expect(settings.key == "/keys/a.key")
        #expect(settings.certificate == "/keys/b.der")
    }

    @Test func shellExpansionIsRefusedInOneLine() throws {
        let root = try scratch()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try "mok_signing_key=$HOME/mok.key\n".write(toFile: root + "/framework.conf", atomically: true, encoding: .utf8)
        do {
            _ = try DKMSFramework.signingSettings(configuration: root + "/framework.conf")
            Issue.record("accepted a shell expansion")
        } catch let error as UserError {
            #expect(error.message.hasPrefix(root + "/framework.conf: mok_signing_key") && error.message.contains("--sign-key"), "\(error.message)")
            #expect(!error.message.contains("\n"))
        }
    }
}
