// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "nvbuild",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "nvbuild", targets: ["nvbuild"]),
        .library(name: "Conftest", targets: ["Conftest"]),
        .library(name: "KernelTree", targets: ["KernelTree"]),
        .library(name: "ModuleELF", targets: ["ModuleELF"]),
        .library(name: "ModuleGraph", targets: ["ModuleGraph"]),
        .library(name: "DKMS", targets: ["DKMS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        // X.509 certificates and the ASN.1 under the module signature's PKCS#7 message.
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    ],
    targets: [
        // System libraries: modulemap + shim header, found through pkg-config.
        .systemLibrary(name: "CKmod", pkgConfig: "libkmod", providers: [.apt(["libkmod-dev"])]),
        .systemLibrary(name: "CElf", pkgConfig: "libelf", providers: [.apt(["libelf-dev"])]),
        .systemLibrary(name: "CLzma", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // Shared plumbing: running processes, atomic writes, diagnostics.
        .target(
            name: "NVBuildSupport",
            dependencies: [.product(name: "Subprocess", package: "swift-subprocess")]
        ),
        .target(name: "KernelTree", dependencies: ["NVBuildSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .target(
            name: "Conftest",
            dependencies: [
                "NVBuildSupport", "KernelTree",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "ModuleELF",
            dependencies: [
                "NVBuildSupport", "KernelTree", "CElf", "CLzma", "CZstd", "CZlib",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(name: "ModuleGraph", dependencies: ["NVBuildSupport", "KernelTree", "ModuleELF", "CKmod"],
                resources: [.embedInCode("Resources/qemu-loader.c")]),
        // A driver tree as files: what its Kbuild files declare, and the one way to copy it.
        .target(name: "SourceTree", dependencies: ["NVBuildSupport"]),
        .target(
            name: "Kbuild",
            dependencies: [
                "NVBuildSupport", "SourceTree", "KernelTree", "ModuleELF",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "DKMS",
            dependencies: [
                "NVBuildSupport", "SourceTree",
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            // Compiled into the binary rather than a resource bundle beside it: an
            // installed nvbuild is one file, and a missing bundle would stop Bundle.module.
            resources: [.embedInCode("Templates/dkms.conf.mustache")]
        ),
        .executableTarget(
            name: "nvbuild",
            dependencies: [
                "NVBuildSupport", "KernelTree", "Conftest", "SourceTree", "Kbuild", "ModuleELF", "ModuleGraph", "DKMS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Facts about the machine the tests run on, shared by several test targets.
        .target(name: "TestSupport", dependencies: ["KernelTree"], path: "Tests/TestSupport"),
        .testTarget(name: "SupportTests", dependencies: ["NVBuildSupport"]),
        .testTarget(name: "KernelTreeTests", dependencies: ["KernelTree"]),
        .testTarget(name: "ConftestTests", dependencies: ["TestSupport", "Conftest", "KernelTree"]),
        .testTarget(
            name: "ModuleELFTests",
            dependencies: [
                "TestSupport", "NVBuildSupport", "ModuleELF",
                .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        .testTarget(name: "ModuleGraphTests", dependencies: ["TestSupport", "ModuleGraph", "ModuleELF", "KernelTree", "CKmod"]),
        .testTarget(name: "KbuildTests", dependencies: ["TestSupport", "NVBuildSupport", "KernelTree", "ModuleELF", "Kbuild", "SourceTree"]),
        .testTarget(name: "DKMSTests", dependencies: ["TestSupport", "NVBuildSupport", "SourceTree", "DKMS", "Kbuild"]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "NVBuildSupport", "KernelTree", "Kbuild", "ModuleELF", "nvbuild"]),
    ],
    swiftLanguageModes: [.v6]
)
