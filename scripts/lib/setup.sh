# shellcheck shell=bash
# Set-up shared by scripts/test and scripts/quickstart: installs what is missing on a fresh Debian
# machine (idempotent: installs nothing that is already there), and the Python clients' venv.
# Source it from the repo root; it defines functions and changes no shell options.

SKEIN_APT_UPDATED=${SKEIN_APT_UPDATED:-0}

section() {
    printf '\n==== %s ====\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root (directly, or through sudo when we are not root).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_install() {
    if [[ $SKEIN_APT_UPDATED -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        SKEIN_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# A jar in /usr/share/java (Debian's layout), by its unversioned name.
java_jar() {
    local jar=/usr/share/java/$1
    [[ -f $jar ]] && printf '%s' "$jar"
}

# The classpath that runs ZooKeeper from Debian's packages. zookeeper.jar's manifest already lists
# its dependencies (netty, jute, slf4j-api, ...); slf4j-simple is the logging backend.
skein_zk_classpath() {
    local zk slf4j
    zk=$(java_jar zookeeper.jar) || return 1
    slf4j=$(java_jar slf4j-simple.jar) || slf4j=$(java_jar slf4j-nop.jar) || return 1
    printf '%s:%s' "$zk" "$slf4j"
}

# rustfmt and clippy, which tests/linters.rs runs (and fails without): added with rustup when
# missing.
skein_install_lint_tools() {
    local tool component
    for tool in fmt clippy; do
        component=$([[ $tool == fmt ]] && echo rustfmt || echo clippy)
        if ! cargo "$tool" --version >/dev/null 2>&1; then
            command -v rustup >/dev/null 2>&1 \
                || die "cargo $tool is missing and there is no rustup to add $component"
            echo "installing the $component component"
            rustup component add "$component" || die "cannot install $component"
        fi
    done
    echo "lint tools: $(cargo fmt --version), $(cargo clippy --version)"
}

# Debian packages: ZooKeeper (jars only, we start it ourselves), a JRE, kcat, and what building
# and the venv need. Each is installed only when missing.
skein_install_system_packages() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
    [[ -f /usr/share/java/zookeeper.jar ]] || missing+=(zookeeper)
    [[ -f /usr/share/java/slf4j-simple.jar ]] || missing+=(libslf4j-java)
    command -v kcat >/dev/null 2>&1 || missing+=(kcat)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    if ((${#missing[@]})); then
        echo "installing missing Debian packages: ${missing[*]}"
        apt_install "${missing[@]}"
    else
        echo "Debian packages: all present (java, zookeeper, slf4j, kcat, python3-venv, cc)"
    fi
    command -v cargo >/dev/null 2>&1 \
        || die "cargo not found: install a Rust toolchain (rustup) first; this script installs no toolchain"
    skein_install_lint_tools
    SKEIN_ZK_CLASSPATH=$(skein_zk_classpath) \
        || die "ZooKeeper jars not found in /usr/share/java (zookeeper.jar, slf4j-simple.jar)"
    export SKEIN_ZK_CLASSPATH
    echo "java: $(java -version 2>&1 | head -n 1)"
    echo "ZooKeeper classpath: $SKEIN_ZK_CLASSPATH"
    echo "kcat: $(kcat -V 2>&1 | head -n 1)"
}

# .venv in the repo root with tests/clients/requirements.txt. Reinstalls only when the
# requirements change (a hash is kept in the venv) or the venv is broken.
skein_setup_venv() {
    local requirements=tests/clients/requirements.txt
    local venv=.venv
    local stamp=$venv/.skein-requirements.sha256
    [[ -f $requirements ]] || die "$requirements not found (run from the repo root)"
    local want
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "creating $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "$venv: requirements unchanged, nothing to install"
    else
        echo "installing $requirements into $venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
        echo "$want" >"$stamp"
    fi
    "$venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka, kazoo, snappy, lz4, zstandard, cramjam' \
        || die "$venv is missing a client module; delete $venv and run again"
    SKEIN_TEST_PYTHON=$PWD/$venv/bin/python
    export SKEIN_TEST_PYTHON
    echo "python clients: $("$SKEIN_TEST_PYTHON" -c 'import confluent_kafka, kafka, aiokafka; print("confluent-kafka", confluent_kafka.__version__, "(librdkafka", confluent_kafka.libversion()[0] + ")", "kafka-python", kafka.__version__, "aiokafka", aiokafka.__version__)')"
}
