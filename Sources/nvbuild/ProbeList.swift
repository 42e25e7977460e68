import ArgumentParser
import Conftest
import Foundation
import NVBuildSupport

struct ListCatalog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Print the conftest catalog: name, pattern, macros, note.",
        discussion: "Example: nvbuild probe list --json"
    )

    @Option(help: "Catalog directory (default: the catalog shipped with nvbuild).") var catalog: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        guard let dir = catalog ?? Catalog.defaultDirectory() else {
            throw UserError(.environment, "the conftest catalog was not found; pass --catalog DIR or set NVBUILD_CATALOG")
        }
        let loaded: Catalog
        do { loaded = try Catalog.load(directory: dir) } catch let e as CatalogError { throw UserError(.environment, "catalog error: \(e)") }
        let defs = loaded.definitions.sorted { ($0.name, $0.releases?.description ?? "") < ($1.name, $1.releases?.description ?? "") }
        if json {
            struct Row: Encodable { var name, pattern: String; var macros: [String]; var note: String; var releases: String?; var location: String }
            try Terminal.json(defs.map { Row(name: $0.name, pattern: $0.check.patternName, macros: $0.macros, note: $0.note, releases: $0.releases?.description, location: $0.location.description) })
            return
        }
        for d in defs {
            let rel = d.releases.map { " [\($0)]" } ?? ""
            Terminal.out("\(d.name)\(rel)\t\(d.check.patternName)\t\(d.macros.joined(separator: ","))\t\(d.note)")
        }
    }
}
