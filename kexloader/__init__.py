"""kexloader: a pure-Python kexec loader for x86-64.

As a library it is a one-way flow of values. Every step but the first and the last is a pure function over
bytes and a description of the machine, so a plan can be made on one machine and loaded on another.

1. **Read.** `kexloader.api.LoadIntent` says what to load in kexec-tools' terms (kernel, initrds, --append,
   --reuse-cmdline, --vmm, -p, modules); `kexloader.api.build_request` applies kexec-tools' rules to it and
   reads the kernel (decompressed when its content is compressed), the initrds and multiboot modules into a
   `kexloader.model.LoadRequest` (`kexloader.api.read_request` does the reading alone). The machine is
   described by a `kexloader.model.SystemFacts`: `kexloader.api.load_facts` reads the running system, or a
   snapshot saved on the target (`python3 -m kexloader.system save FILE`).
2. **Plan.** `kexloader.api.make_plan` detects the image kind (`kexloader.images`), places every segment in
   usable memory (`kexloader.memory`) and returns a `kexloader.model.Plan`: segments, entry point, flags.
   Nothing here touches the host.
3. **Save and ship** (optional). `kexloader.plan.write_dir` writes `plan.json` and one file per segment;
   `kexloader.plan.read_dir` reads it back and checks every segment against its SHA-256.
4. **Load.** A backend (`kexloader.backends`) hands the plan to the kernel (`kexec_load(2)`) or to Xen's
   kexec hypercall; `kexloader.backends.recording.RecordingBackend` keeps it in memory instead.
   `execute()` starts the loaded kernel, separately.

The offline-plan workflow of an embedded team: on the device, save a snapshot once; in the build pipeline,
`load_facts(snapshot)` + `build_request` + `make_plan` + `write_dir`; on the device, `read_dir` and a backend's
`load` (or `kexloader -l --plan-in DIR`). `examples/` in the source tree has a runnable script for each step,
for inspecting an image (`kexloader.inspect`) and for reading a crashed kernel's log from a vmcore
(`kexloader.vmcore`). Errors are `kexloader.errors.KexloaderError` subclasses with a one-line message and
a hint.
"""

__version__ = "0.1.0"
