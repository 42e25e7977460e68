/// Builds the C text of each conftest compile. Pure functions: the same
/// definition and header-presence results always give the same text, which
/// is what the result cache hashes.
public enum ProbeSource {
    /// What every conftest compile starts with: the header-presence results
    /// (the tree's conftest/headers.h), kconfig, two arch fix-ups, autoconf.
    public static func preamble(headerPresenceLines: [String]) -> String {
        var text = headerPresenceLines.joined(separator: "\n")
        text += """

            #include <linux/kconfig.h>
            #if defined(CONFIG_XEN) && defined(CONFIG_XEN_INTERFACE_VERSION) && !defined(__XEN_INTERFACE_VERSION__)
            #define __XEN_INTERFACE_VERSION__ CONFIG_XEN_INTERFACE_VERSION
            #endif
            #if defined(CONFIG_KASAN) && defined(CONFIG_ARM64)
            #  if defined(CONFIG_KASAN_SW_TAGS)
            #    define KASAN_SHADOW_SCALE_SHIFT 4
            #  else
            #    define KASAN_SHADOW_SCALE_SHIFT 3
            #  endif
            #endif
            #if defined(NV_GENERATED_AUTOCONF_H_PRESENT)
            #include <generated/autoconf.h>
            #else
            #include <linux/autoconf.h>
            #endif

            """
        return text
    }

    /// The named compile probes of a definition, as the text after the preamble:
    /// one for the simple patterns, several for `rules`.
    public static func probes(of definition: TestDefinition) -> [(name: String, body: String)] {
        units(of: definition).map { ($0.name, $0.includes.isEmpty ? $0.body : $0.includes + "\n" + $0.body) }
    }

    /// The probes split into include part and body, with their shape.
    static func units(of definition: TestDefinition) -> [(name: String, includes: String, body: String, shape: CompileUnit.Shape)] {
        let includes = definition.includes.map(\.text).joined(separator: "\n")
        let symbol = "nvbuild_conftest_" + definition.name
        switch definition.check {
        case .function(let name, let arguments):
            return [("call", includes, "void \(symbol)(void) {\n    \(name)(\(arguments));\n}", .call(function: name))]
        case .member(let type, let member):
            return [("member", includes, "int \(symbol)(void) {\n    return offsetof(\(type), \(member));\n}", .offsetof(type: type, member: member))]
        case .compiles, .fails:
            return [("code", includes, definition.code ?? "", .code)]
        case .rules:
            return definition.probes.map { ($0.name, includes, $0.code, .code) }
        default:
            return []
        }
    }

    /// Lines are echoed through the shell in the reference flow (`echo ${LINE}`),
    /// which collapses runs of blanks and drops leading and trailing ones.
    public static func normalize(_ line: String) -> String {
        line.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }
}
