defmodule Mix.Tasks.ZarrBridge.Install do
  @shortdoc "Creates the Python environment the ZarrBridge sidecar runs in"

  @moduledoc """
  Creates the sidecar's Python environment for this Mix project.

      mix zarr_bridge.install [--python PATH] [--dir DIR] [--force]

  It makes a virtual environment with the first Python 3.11+ it finds on the
  `PATH` (`python3.13`, `python3.12`, `python3.11`, `python3`) or with
  `--python PATH`, and installs into it the sidecar (the Python distribution
  `zarr-bridge-sidecar`, at exactly this ZarrBridge's version, from the
  source the package ships in `priv/python`) with its `remote` extra (the
  object-store engines obstore, s3fs, gcsfs, adlfs and icechunk that
  `storage: :s3`, `:gcs`, `:azure`, `:http` and `:url` run on) and its
  dependencies at the versions the project tests with
  (`priv/python/constraints.txt`).

  The environment goes to `--dir`, else the directory `config :zarr_bridge,
  python_env: DIR` names, else `_build/zarr_bridge_python` (shared by every
  `MIX_ENV`). `ZarrBridge.Sidecar` finds it there when it starts; a release
  carries a copy (see `ZarrBridge.Release`).

  Run again, it checks the environment and does nothing when it is complete
  and up to date; `--force` makes it anew. pip's own settings apply
  (`PIP_INDEX_URL`, `PIP_FIND_LINKS`, a proxy).
  """

  use Mix.Task

  alias ZarrBridge.Sidecar.Launcher

  @switches [python: :string, dir: :string, force: :boolean]
  @candidates ~w(python3.13 python3.12 python3.11 python3)
  @distribution "zarr-bridge-sidecar"
  # The extra the sidecar runs with, and the modules that prove it is installed.
  @extra "remote"
  @extra_modules ~w(obstore s3fs gcsfs adlfs icechunk)

  @impl true
  def run(args) do
    {opts, rest} = OptionParser.parse!(args, strict: @switches)
    if rest != [], do: Mix.raise("unexpected arguments: #{Enum.join(rest, " ")}")
    Mix.Task.run("app.config")
    ensure!(opts)
    :ok
  end

  @doc """
  Makes sure the environment exists and is current; returns its directory
  and manifest. Options as the task's (`:python`, `:dir`, `:force`).
  """
  @spec ensure!(keyword) :: {Path.t(), %{String.t() => String.t()}}
  def ensure!(opts \\ []) do
    dir = env_dir(opts)
    version = zarr_bridge_version()
    {source, fingerprint} = source()
    manifest = Launcher.read_manifest(dir)

    if not Keyword.get(opts, :force, false) and same_python?(opts[:python], manifest) and
         current?(dir, manifest, version, fingerprint) do
      info(
        "zarr_bridge: the sidecar's Python environment in #{dir} is up to date " <>
          "(#{@distribution} #{version}, Python #{manifest["python_version"]}); nothing to do"
      )

      {dir, manifest}
    else
      install!(dir, opts, version, source, fingerprint)
    end
  end

  @doc "Where the environment goes (see the moduledoc)."
  @spec env_dir(keyword) :: Path.t()
  def env_dir(opts \\ []) do
    dir =
      opts[:dir] || Application.get_env(:zarr_bridge, :python_env) ||
        Launcher.default_env_dir(Mix.Project.build_path())

    Path.expand(dir)
  end

  ## Checking

  defp current?(dir, manifest, version, fingerprint) do
    with %{"layout" => "venv", "version" => ^version, "source" => ^fingerprint} <- manifest,
         {:ok, launch} <- Launcher.resolve(python_env: dir),
         :ok <- Launcher.check_import(launch, [], Launcher.worker_modules()),
         {out, 0} <-
           System.cmd(launch.python, ["-P", "-c", version_check()], stderr_to_stdout: true),
         ^version <- String.trim(out) do
      true
    else
      _ -> false
    end
  end

  defp version_check do
    "import pybridge, #{Enum.join(@extra_modules, ", ")}; print(pybridge.__version__)"
  end

  # A --python other than the one the environment was made with means a new one.
  defp same_python?(nil, _manifest), do: true

  defp same_python?(given, manifest) do
    path =
      if String.contains?(given, "/"), do: Path.expand(given), else: System.find_executable(given)

    match?(
      {:ok, real, _} when real == :erlang.map_get("python", manifest),
      path && python_info(path)
    )
  end

  ## Installing

  defp install!(dir, opts, version, source, fingerprint) do
    {python, python_version} = find_python!(opts[:python])
    venv = Path.join(dir, "venv")
    info("zarr_bridge: creating the sidecar's Python environment in #{dir}")
    info("  * Python #{python_version}: #{python}")
    File.rm_rf!(dir)
    File.mkdir_p!(dir)

    case System.cmd(python, ["-m", "venv", venv], stderr_to_stdout: true) do
      {_, 0} ->
        :ok

      {out, _} ->
        File.rm_rf!(dir)

        Mix.raise("""
        #{python} -m venv #{venv} failed:
        #{String.trim(out)}

        Fix: install Python's venv module (on Debian and Ubuntu:
        `apt-get install python3-venv`), or pass --python with another Python 3.11+.
        """)
    end

    venv_python = Path.join([venv, "bin", "python"])
    # pip builds in the source tree (build/, *.egg-info): it gets a copy, so
    # the dependency's own files are never written to.
    build_src = Path.join(dir, "src")
    if source, do: File.cp_r!(source, build_src)

    requirement =
      if source,
        do: "#{build_src}[#{@extra}]",
        else: "#{@distribution}[#{@extra}]==#{version}"

    constraints = if source, do: ["-c", Path.join(source, "constraints.txt")], else: []

    info(
      "  * pip install #{@distribution} #{version} (from #{source || "PyPI"}) and its dependencies"
    )

    pip_args =
      ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q"] ++
        constraints ++ [requirement]

    case System.cmd(venv_python, pip_args, stderr_to_stdout: true) do
      {_, 0} ->
        :ok

      {out, status} ->
        File.rm_rf!(dir)

        Mix.raise("""
        pip could not install #{@distribution} #{version} (exit status #{status}):
        #{tail(out)}

        Fix: check that this machine reaches the package index (PyPI, or the one
        PIP_INDEX_URL names; a proxy goes in HTTPS_PROXY), then run
        `mix zarr_bridge.install` again. #{if source, do: "", else: no_source_hint()}
        """)
    end

    File.rm_rf!(build_src)

    manifest = [
      {"layout", "venv"},
      {"version", version},
      {"source", fingerprint},
      {"python", python},
      {"python_version", python_version}
    ]

    Launcher.write_manifest!(dir, manifest)

    unless current?(dir, Map.new(manifest), version, fingerprint) do
      Mix.raise("the environment in #{dir} was installed but cannot import the sidecar")
    end

    info("  * done: the sidecar (#{@distribution} #{version}) runs from #{venv_python}")
    info("    ZarrBridge.Sidecar finds it there at run time; `mix release` copies it")
    {dir, Map.new(manifest)}
  end

  defp no_source_hint do
    "This zarr_bridge has no priv/python (a sparse git checkout?): use the " <>
      "dependency with `subdir: \"elixir_client\"` instead of `sparse:`."
  end

  # {real path of the interpreter, "3.11"}
  defp find_python!(nil) do
    found =
      Enum.find_value(@candidates, fn name ->
        with path when is_binary(path) <- System.find_executable(name),
             {:ok, real, version} <- python_info(path),
             true <- new_enough?(version) do
          {real, version}
        else
          _ -> nil
        end
      end)

    found ||
      Mix.raise("""
      no Python 3.11 or newer found on the PATH (looked for #{Enum.join(@candidates, ", ")}).

      Fix: install Python 3.11+ (on Debian 12: `apt-get install python3 python3-venv`),
      or pass its path: mix zarr_bridge.install --python /path/to/python3.11
      """)
  end

  defp find_python!(given) do
    path =
      if String.contains?(given, "/"), do: Path.expand(given), else: System.find_executable(given)

    case path && python_info(path) do
      {:ok, real, version} ->
        if new_enough?(version),
          do: {real, version},
          else: Mix.raise("#{given} is Python #{version}; the sidecar needs Python 3.11 or newer")

      _ ->
        Mix.raise("--python #{given}: not a Python interpreter that runs")
    end
  end

  defp python_info(path) do
    code =
      "import sys, os; print(os.path.realpath(sys.executable)); " <>
        "print('%d.%d' % sys.version_info[:2])"

    case System.cmd(path, ["-c", code], stderr_to_stdout: true) do
      {out, 0} ->
        case String.split(String.trim(out), "\n") do
          [real, version] -> {:ok, real, version}
          _ -> :error
        end

      _ ->
        :error
    end
  rescue
    ErlangError -> :error
  end

  defp new_enough?(version) do
    case String.split(version, ".") |> Enum.map(&Integer.parse/1) do
      [{3, ""}, {minor, ""}] -> minor >= 11
      _ -> false
    end
  end

  ## The source

  # {priv/python or nil, fingerprint of its files (or of the version)}
  defp source do
    dir =
      Enum.find(python_source_dirs(), fn dir ->
        File.regular?(Path.join(dir, "pyproject.toml")) and
          File.regular?(Path.join([dir, "pybridge", "__init__.py"]))
      end)

    if dir do
      # md5 is in erts (no :crypto needed); this detects change, not tampering.
      hash =
        Mix.Tasks.Compile.ZarrBridgePython.source_files(dir)
        |> Enum.map(fn rel -> [rel, 0, File.read!(Path.join(dir, rel)), 0] end)
        |> :erlang.md5()
        |> Base.encode16(case: :lower)

      {dir, hash}
    else
      {nil, "pypi-" <> zarr_bridge_version()}
    end
  end

  defp python_source_dirs do
    from_app =
      case :code.priv_dir(:zarr_bridge) do
        {:error, _} -> []
        priv -> [Path.join(List.to_string(priv), "python")]
      end

    from_dep =
      case Mix.Project.deps_paths()[:zarr_bridge] do
        nil -> []
        path -> [Path.join(path, "priv/python")]
      end

    own =
      if Mix.Project.config()[:app] == :zarr_bridge,
        do: [Path.join(File.cwd!(), "priv/python")],
        else: []

    from_app ++ from_dep ++ own
  end

  defp zarr_bridge_version do
    Application.load(:zarr_bridge)

    case Application.spec(:zarr_bridge, :vsn) do
      nil -> Mix.raise("the :zarr_bridge application is not available: add it to your deps")
      vsn -> List.to_string(vsn)
    end
  end

  defp tail(out) do
    out |> String.split("\n") |> Enum.take(-25) |> Enum.join("\n") |> String.trim()
  end

  defp info(text), do: Mix.shell().info(text)
end
