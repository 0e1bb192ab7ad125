"""The option table: getopt's tables and --help come from it, and it names every option kexec-tools has."""

import getopt

import pytest

from kexloader import cli, options

# kexec-tools 2.0.25's x86-64 long options (kexec.h, arch/i386, kexec-bzImage64.c, kexec-elf/multiboot) and the
# names kexloader adds: dropping one from the table would turn a working command line into a usage error.
KEXEC_TOOLS = {
    "help", "version", "debug", "force", "no-ifdown", "no-sync", "no-checks", "load", "unload", "exec", "type",
    "load-panic", "kexec-file-syscall", "kexec-syscall", "kexec-syscall-auto", "status", "mem-min", "mem-max",
    "reuseinitrd", "print-ckr-size", "load-preserve-context", "load-jump-back-helper", "entry", "load-live-update",
    "exec-live-update", "hotplug", "no-cma", "force-dtb", "reset-vga", "serial", "serial-baud", "console-vga",
    "console-serial", "elf32-core-headers", "elf64-core-headers", "pass-memmap-cmdline", "noefi",
    "reuse-video-type", "command-line", "append", "reuse-cmdline", "initrd", "ramdisk", "real-mode",
    "entry-32bit", "args-linux", "args-elf", "args-none", "module", "dtb"}
EXTRAS = {"vmm", "dry-run", "plan-out", "plan-in", "facts", "inspect", "json", "uki-profile", "boot-entry",
          "boot-dir", "esp", "list-boot-entries"}


def test_the_table_names_every_option_once():
    names = [o.long for o in options.OPTIONS]
    assert len(names) == len(set(names))
    assert set(names) == KEXEC_TOOLS | EXTRAS
    assert {o.long for o in options.OPTIONS if o.group == options.Group.EXTRAS} == EXTRAS
    shorts = [o.short for o in options.OPTIONS if o.short]
    assert len(shorts) == len(set(shorts)) and set(shorts) == set("hvlpefuStixycsad")


def test_getopt_tables_come_from_the_table():
    assert cli.LONG == {o.long: o.takes_arg for o in options.OPTIONS}
    assert set(cli.SHORT.replace(":", "")) == set("hvlpefuStixycsad?") and "t:" in cli.SHORT
    assert cli.SHORT_TO_LONG["t"] == "type" and cli.SHORT_TO_LONG["?"] == "?"
    pairs, _ = getopt.gnu_getopt(["-t", "x", "--app=y"], cli.SHORT, [n + "=" * a for n, a in cli.LONG.items()])
    assert pairs == [("-t", "x"), ("--append", "y")]


@pytest.mark.parametrize("opt", options.OPTIONS, ids=lambda o: o.long)
def test_every_option_has_a_description_in_help(opt):
    assert opt.spelling() in cli.USAGE
    if opt.alias_of is not None:
        assert opt.help == "" and options.BY_LONG[opt.alias_of].alias_of is None
        assert opt.takes_arg == options.BY_LONG[opt.alias_of].takes_arg
    else:
        assert opt.help and "\n" not in opt.help
    if opt.long in cli.NOT_YET:
        assert opt.help.startswith("Refused")


def test_help_is_the_table_in_order():
    lines = cli.USAGE.splitlines()
    assert lines[0] == "Usage: kexloader [OPTION]... [kernel]"
    assert options.usage("kexec").splitlines()[0] == "Usage: kexec [OPTION]... [kernel]"
    at = 0
    for o in options.OPTIONS:  # each in turn, after the one before ("--entry" after "--load-panic", not in it)
        if o.alias_of is None:
            at = cli.USAGE.index(f" {o.spelling()}", at) + 1
    assert max(len(line) for line in lines) <= 112
