import ArgumentParser
import Conftest
import Foundation
import NVBuildSupport

/// The fingerprints of a tree's conftest.sh arms, for filling the catalog's `Upstream:`
/// fields from trees whose parity was verified (hidden: a maintainer's tool).
struct FingerprintProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fingerprint",
        abstract: "Print the fingerprint of each test's conftest.sh arm (test, fingerprint, line).",
        discussion: "Example: nvbuild probe fingerprint --tree kernel-open",
        shouldDisplay: false
    )

    @Option(help: "The driver tree (its conftest.sh and Kbuild requests).") var tree: String
    @Flag(help: "Every arm of conftest.sh (its patterns), not only the tests the tree requests.") var all = false
    @Option(help: "Print the normalised text (what the fingerprint hashes) of this test's arm.") var show: String?
    @Flag(help: "Print only the seconds that reading conftest.sh and fingerprinting the requested tests' arms take (what a probe adds).") var time = false
    @Option(help: "Add a column: the catalog definition this catalog chooses by test name and Releases: (the choice a parity run verified).") var byNameIn: String?

    func run() async throws {
        let path = URL(fileURLWithPath: tree).standardizedFileURL.path
        let script = path + "/conftest.sh"
        if time {
            let tests = try ConftestRequests.read(path: path).allTests
            let start = Date()
            let arms = try ConftestArms.read(path: script)
            let found = tests.compactMap { arms?.arm(for: $0)?.fingerprint }.count
            Terminal.out(String(format: "%.4f s: conftest.sh read, %d of %d requested tests' arms fingerprinted", Date().timeIntervalSince(start), found, tests.count))
            return
        }
        guard let arms = try ConftestArms.read(path: script) else {
            throw UserError(.environment, "\(script): has no compile_test case arms (not shaped like NVIDIA's conftest.sh); nothing to fingerprint")
        }
        if let show {
            guard let arm = arms.arm(for: show) else { throw UserError(.usage, "\(script): no arm for '\(show)'") }
            Terminal.out(arm.normalised)
            return
        }
        if all {
            for arm in arms.arms { Terminal.out("\(arm.patterns.joined(separator: "|"))\t\(arm.fingerprint)\t\(arm.line)") }
            return
        }
        let requests = try ConftestRequests.read(path: path)
        let catalog: Catalog?
        do { catalog = try byNameIn.map { try Catalog.load(directory: $0) } } catch let e as CatalogError { throw UserError(.environment, "catalog error: \(e)") }
        for test in requests.allTests {
            var row = "\(test)\t\(arms.arm(for: test).map { "\($0.fingerprint)\t\($0.line)" } ?? "-\t-")"
            if let catalog {
                row += "\t" + (catalog.definition(test, release: requests.driverVersion)?.location.description ?? "-")
            }
            Terminal.out(row)
        }
    }
}
