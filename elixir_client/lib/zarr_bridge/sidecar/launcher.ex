defmodule ZarrBridge.Sidecar.Launcher do
  @moduledoc false
  # Which Python runs the sidecar, with what environment and arguments.
  # Everything is decided at run time, from the first of:
  #
  #   1. the :python option                         (source :option)
  #   2. $ZARR_BRIDGE_PYTHON                         (source :env)
  #   3. the installed environment                   (source :installed):
  #      - the release's bundle, `priv/python_env` of :zarr_bridge (made by
  #        ZarrBridge.Release.bundle_python/1; only releases have it);
  #      - else the directory `config :zarr_bridge, python_env: DIR` names (only it);
  #      - else `_build/zarr_bridge_python` of the Mix project (made by
  #        `mix zarr_bridge.install`), found from where :zarr_bridge is loaded
  #        (`_build/ENV/lib/zarr_bridge`), never inside a release;
  #   4. this repository's `.venv`, when :zarr_bridge runs from its own
  #      checkout (`elixir_client/_build/...`)       (source :checkout)
  #
  # and otherwise an error that says to run `mix zarr_bridge.install`.
  #
  # An installed environment is a directory with a `manifest` file (lines
  # `key=value`) and either a virtual environment in `venv/` (layout=venv,
  # made by the install task) or a plain `pip install --target` style
  # directory `site/` run by the system's `pythonX.Y` with PYTHONPATH
  # (layout=site, a release: a venv cannot be moved).
  #
  # The sidecar always runs as `python -P -m pybridge`: `-P` (Python 3.11+)
  # keeps the working directory off its import path, so a `numpy.py` where
  # the BEAM runs is never imported in place of numpy, by the sidecar or by
  # its workers (multiprocessing passes the flag on).

  alias ZarrBridge.Error

  @env_dir_name "zarr_bridge_python"
  @manifest "manifest"

  @type source :: :option | :env | :installed | :checkout
  @type launch :: %{
          python: Path.t(),
          env: [{String.t(), String.t() | nil}],
          args: [String.t()],
          source: source,
          why: String.t()
        }

  @doc """
  Resolves the sidecar's Python. Options: `:python` (the start option),
  `:python_env` (overrides the `:python_env` config).
  """
  @spec resolve(keyword) :: {:ok, launch} | {:error, Error.t()}
  def resolve(opts \\ []) do
    option = Keyword.get(opts, :python)
    env = System.get_env("ZARR_BRIDGE_PYTHON")

    cond do
      option != nil -> explicit(option, :option, "the :python option")
      env not in [nil, ""] -> explicit(env, :env, "$ZARR_BRIDGE_PYTHON")
      true -> installed_or_checkout(opts)
    end
  end

  @doc "The default directory of the installed environment for a Mix build path."
  @spec default_env_dir(Path.t()) :: Path.t()
  def default_env_dir(build_path), do: Path.join(Path.dirname(build_path), @env_dir_name)

  @doc "The manifest of an installed environment, or nil."
  @spec read_manifest(Path.t()) :: %{String.t() => String.t()} | nil
  def read_manifest(dir) do
    case File.read(Path.join(dir, @manifest)) do
      {:ok, text} ->
        for line <- String.split(text, "\n"),
            [key, value] <- [String.split(line, "=", parts: 2)],
            into: %{},
            do: {String.trim(key), String.trim(value)}

      {:error, _} ->
        nil
    end
  end

  @doc "Writes the manifest of an installed environment."
  @spec write_manifest!(Path.t(), [{String.t(), String.t()}]) :: :ok
  def write_manifest!(dir, entries) do
    File.write!(Path.join(dir, @manifest), Enum.map(entries, fn {k, v} -> "#{k}=#{v}\n" end))
  end

  @doc """
  The Port's `{:spawn_executable, python}` arguments and environment for a
  resolved launch and the sidecar's validated config (see
  `ZarrBridge.Sidecar.validate_options!/1`).
  """
  @spec port_command(launch, map) :: {Path.t(), [String.t()], [{charlist, charlist | false}]}
  def port_command(launch, config) do
    args =
      launch.args ++
        if(config.workers, do: ["--workers", Integer.to_string(config.workers)], else: []) ++
        integer_arg("--max-request-bytes", config.max_request_bytes) ++
        integer_arg("--max-in-flight", config.max_in_flight) ++
        Enum.flat_map(config.allowed_roots, &["--allowed-root", &1]) ++
        Enum.flat_map(config.allowed_urls, &["--allowed-url", &1]) ++
        if(config.allow_pickle, do: ["--allow-pickle"], else: []) ++
        config.args

    env =
      Enum.map([{"PYTHONUNBUFFERED", "1"} | merge_env(launch.env, config.env)], fn
        {name, nil} -> {String.to_charlist(name), false}
        {name, value} -> {String.to_charlist(name), String.to_charlist(value)}
      end)

    {launch.python, args, env}
  end

  @doc """
  Checks that the launch's Python can import `modules` (by default
  pybridge; `worker_modules/0` for what the worker pool needs), with the
  sidecar's flags and environment plus `extra_env`. Its output is captured,
  never printed. `{:error, output}` when it cannot.
  """
  @spec check_import(launch, [{String.t(), String.t() | nil}], [String.t()]) ::
          :ok | {:error, String.t()}
  def check_import(launch, extra_env \\ [], modules \\ ["pybridge"]) do
    flags = Enum.take_while(launch.args, &(&1 != "-m"))
    code = Enum.map_join(modules, "; ", &"import #{&1}")

    case System.cmd(launch.python, flags ++ ["-c", code],
           env: merge_env(launch.env, extra_env),
           stderr_to_stdout: true
         ) do
      {_, 0} -> :ok
      {output, status} -> {:error, "exit status #{status}: " <> String.trim(output)}
    end
  rescue
    e in ErlangError -> {:error, "cannot run #{launch.python}: #{inspect(e.original)}"}
  end

  @doc "The modules the sidecar's workers import (pybridge.pool.pool.PRELOAD)."
  @spec worker_modules() :: [String.t()]
  def worker_modules,
    do:
      ~w(pybridge.pool.pool pybridge.pool.codec_tasks pybridge.zarr.chunk_tasks numpy numcodecs zarr)

  # The :env option wins, except that a PYTHONPATH the launch needs (a
  # release's site directory) stays on the path, after the option's entries.
  @doc false
  @spec merge_env([{String.t(), String.t() | nil}], [{String.t(), String.t() | nil}]) ::
          [{String.t(), String.t() | nil}]
  def merge_env(launch_env, option_env) do
    Enum.reduce(option_env, launch_env, fn
      {"PYTHONPATH", value}, acc ->
        case List.keyfind(acc, "PYTHONPATH", 0) do
          {_, ours} when ours != nil ->
            site = hd(String.split(ours, ":"))
            merged = Enum.join(List.wrap(value) ++ [site], ":")
            List.keystore(acc, "PYTHONPATH", 0, {"PYTHONPATH", merged})

          _ ->
            List.keystore(acc, "PYTHONPATH", 0, {"PYTHONPATH", value})
        end

      {name, value}, acc ->
        List.keystore(acc, name, 0, {name, value})
    end)
  end

  ## Sources

  defp explicit(name, source, where) do
    path =
      if String.contains?(name, "/"), do: Path.expand(name), else: System.find_executable(name)

    if path && executable?(path) do
      {:ok, launch(path, [], source, "#{where} names #{path}")}
    else
      error(
        {:python_not_found, name},
        "#{where} names #{inspect(name)}, which is not an executable file; " <> order()
      )
    end
  end

  defp installed_or_checkout(opts) do
    bundle = release_bundle()

    case Keyword.get(opts, :python_env, Application.get_env(:zarr_bridge, :python_env)) do
      nil ->
        search([bundle, build_env()], checkout())

      dir ->
        # A release carries its own copy, whatever the build machine's config said.
        with {bundle_dir, where} <- bundle,
             {:ok, launch} <- from_env_dir(bundle_dir, where) do
          {:ok, launch}
        else
          _ -> configured(Path.expand(dir))
        end
    end
  end

  defp configured(dir) do
    case from_env_dir(dir, "the :python_env config (#{dir})") do
      {:ok, _} = ok ->
        ok

      {:error, :missing} ->
        error(
          {:no_python_env, dir},
          "the :python_env config names #{dir}, which does not exist: run " <>
            "`mix zarr_bridge.install` in your project; " <> order()
        )

      {:error, text} ->
        error({:no_python_env, dir}, "#{text}; run `mix zarr_bridge.install` again")
    end
  end

  defp search(dirs, checkout) do
    dirs = Enum.reject(dirs, &is_nil/1)

    found =
      Enum.find_value(dirs, fn {dir, where} ->
        case from_env_dir(dir, where) do
          {:ok, launch} -> {:ok, launch}
          {:error, :missing} -> nil
          {:error, text} -> {:error, text}
        end
      end)

    case {found, checkout} do
      {{:ok, _} = ok, _} ->
        ok

      {{:error, text}, _} ->
        error({:no_python_env, text}, text <> "; run `mix zarr_bridge.install` again")

      {nil, {:ok, _} = ok} ->
        ok

      {nil, nil} ->
        looked = Enum.map_join(dirs, ", ", fn {dir, _} -> dir end)

        error(
          {:no_python_env, looked},
          "no Python environment for the sidecar: run `mix zarr_bridge.install` in your " <>
            "project (looked in: #{looked}); " <> order()
        )
    end
  end

  # The release's bundle: priv/python_env of :zarr_bridge.
  defp release_bundle do
    case :code.priv_dir(:zarr_bridge) do
      {:error, _} -> nil
      priv -> {Path.join(List.to_string(priv), "python_env"), "the release's bundle"}
    end
  end

  # _build/zarr_bridge_python of the Mix project :zarr_bridge is built in.
  defp build_env do
    with false <- in_release?(),
         dir when is_list(dir) <- :code.lib_dir(:zarr_bridge) do
      # .../_build/ENV/lib/zarr_bridge
      build_path = Path.expand("../..", List.to_string(dir))
      {default_env_dir(build_path), "the installed environment"}
    else
      _ -> nil
    end
  end

  defp in_release?, do: System.get_env("RELEASE_ROOT") not in [nil, ""]

  # This repository's .venv, when :zarr_bridge is built in elixir_client/_build.
  defp checkout do
    with false <- in_release?(),
         dir when is_list(dir) <- :code.lib_dir(:zarr_bridge),
         root = Path.expand("../../../../..", List.to_string(dir)),
         true <- File.regular?(Path.join([root, "pybridge", "__init__.py"])),
         python = Path.join([root, ".venv", "bin", "python"]),
         true <- executable?(python) do
      {:ok, launch(python, [], :checkout, "the checkout's virtual environment #{python}")}
    else
      _ -> nil
    end
  end

  defp from_env_dir(dir, where) do
    case read_manifest(dir) do
      nil ->
        if File.dir?(dir),
          do: {:error, "#{where} #{dir} has no manifest (an unfinished install?)"},
          else: {:error, :missing}

      %{"layout" => "venv"} ->
        python = Path.join([dir, "venv", "bin", "python"])

        if executable?(python),
          do: {:ok, launch(python, [], :installed, "#{where} #{dir}")},
          else: {:error, "#{where} #{dir} has no #{python}"}

      %{"layout" => "site"} = manifest ->
        site_python(dir, manifest, where)

      manifest ->
        {:error, "#{where} #{dir} has an unknown layout #{inspect(manifest["layout"])}"}
    end
  end

  # A site directory runs with the system's Python of the version it was built
  # for (its compiled modules are for that version only).
  defp site_python(dir, manifest, where) do
    version = Map.get(manifest, "python_version", "3")
    built_with = Map.get(manifest, "python", "")

    python =
      cond do
        built_with != "" and executable?(built_with) -> built_with
        found = System.find_executable("python#{version}") -> found
        true -> nil
      end

    if python do
      site = Path.join(dir, "site")
      pythonpath = Enum.join([site | List.wrap(System.get_env("PYTHONPATH"))], ":")
      {:ok, launch(python, [{"PYTHONPATH", pythonpath}], :installed, "#{where} #{dir}")}
    else
      {:error,
       "#{where} #{dir} needs Python #{version} (python#{version} on the PATH), " <>
         "which is not installed on this machine"}
    end
  end

  defp launch(python, env, source, why) do
    %{python: python, env: env, args: ["-P", "-m", "pybridge"], source: source, why: why}
  end

  defp error(reason, text) do
    {:error,
     %Error{code: :sidecar_unavailable, message: text, details: %{reason: reason, retry_in_ms: 0}}}
  end

  defp order do
    "the sidecar's Python is taken from, in order: the :python option, $ZARR_BRIDGE_PYTHON, " <>
      "the environment `mix zarr_bridge.install` makes (or a release's bundle)"
  end

  defp integer_arg(_flag, nil), do: []
  defp integer_arg(flag, n), do: [flag, Integer.to_string(n)]

  defp executable?(path) do
    case File.stat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} -> Bitwise.band(mode, 0o111) != 0
      _ -> false
    end
  end
end
