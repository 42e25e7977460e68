import ArgumentParser
import Conftest
import Foundation
import NVBuildSupport

struct ListCatalog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Print the conftest catalog (name, pattern, macros, note), or with --tree how each requested test is answered.",
        discussion: """
            Example: nvbuild probe list --json
                     nvbuild probe list --tree kernel-open

            With --tree, one row per test the tree requests: 'catalog' (and the definition), \
            'changed-upstream' (the catalog defines the name, but the tree's conftest.sh arm matches \
            none of its Upstream: fingerprints; delegated), 'unknown' (not in the catalog; delegated) \
            or 'no-arm' (conftest.sh has no arm for it), with the arm's fingerprint.
            """
    )

    @Option(help: "Catalog directory (default: the catalog shipped with nvbuild).") var catalog: String?
    @Option(help: "A driver tree: list how the catalog answers each test it requests.") var tree: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        guard let dir = catalog ?? Catalog.defaultDirectory() else {
            throw UserError(.environment, "the conftest catalog was not found; pass --catalog DIR or set NVBUILD_CATALOG")
        }
        let loaded: Catalog
        do { loaded = try Catalog.load(directory: dir) } catch let e as CatalogError { throw UserError(.environment, "catalog error: \(e)") }
        if let tree {
            try listTree(tree, catalog: loaded)
            return
        }
        let defs = loaded.definitions.sorted { ($0.name, $0.releases?.description ?? "") < ($1.name, $1.releases?.description ?? "") }
        if json {
            struct Row: Encodable { var name, pattern: String; var macros: [String]; var note: String; var releases: String?; var upstream: [String]; var location: String }
            try Terminal.json(defs.map { Row(name: $0.name, pattern: $0.check.patternName, macros: $0.macros, note: $0.note, releases: $0.releases?.description, upstream: $0.upstream, location: $0.location.description) })
            return
        }
        for d in defs {
            let rel = d.releases.map { " [\($0)]" } ?? ""
            let upstream = d.upstream.isEmpty ? "-" : d.upstream.joined(separator: ",")
            Terminal.out("\(d.name)\(rel)\t\(d.check.patternName)\t\(d.macros.joined(separator: ","))\t\(upstream)\t\(d.note)")
        }
    }

    private func listTree(_ path: String, catalog: Catalog) throws {
        let requests = try ConftestRequests.read(path: URL(fileURLWithPath: path).standardizedFileURL.path)
        struct Row: Encodable { var test, status: String; var definition: String?; var fingerprint: String?; var line: Int? }
        var rows: [Row] = []
        for test in requests.allTests {
            switch catalog.choose(test, arms: requests.arms, release: requests.driverVersion) {
            case .definition(let d, let arm):
                rows.append(Row(test: test, status: "catalog", definition: d.location.description, fingerprint: arm?.fingerprint, line: arm?.line))
            case .delegate(let reason, let arm, _):
                rows.append(Row(test: test, status: reason.rawValue, definition: nil, fingerprint: arm?.fingerprint, line: arm?.line))
            case .noArm:
                rows.append(Row(test: test, status: "no-arm", definition: nil, fingerprint: nil, line: nil))
            }
        }
        let matching: CatalogMatching = requests.arms.map { .fingerprints(script: $0.path) }
            ?? .names(reason: requests.conftestScript.map { "\($0) has no compile_test case arms to fingerprint" } ?? "\(requests.path) has no conftest.sh")
        if json {
            struct Listing: Encodable { var catalogMatching: CatalogMatching; var tests: [Row] }
            try Terminal.json(Listing(catalogMatching: matching, tests: rows))
            return
        }
        Terminal.note(matching.description)
        for r in rows {
            Terminal.out("\(r.test)\t\(r.status)\t\(r.fingerprint ?? "-")\t\(r.definition ?? "-")")
        }
        let count = { (s: String) in rows.filter { $0.status == s }.count }
        Terminal.out("\(rows.count) tests: \(count("catalog")) from the catalog, \(count("unknown")) unknown, \(count("changed-upstream")) changed upstream" + (count("no-arm") > 0 ? ", \(count("no-arm")) without an arm in conftest.sh" : ""))
    }
}
