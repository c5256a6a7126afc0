defmodule ZarrBridge.Release do
  @moduledoc """
  A `mix release` step that puts the sidecar's Python packages into the
  release, so that it runs with no checkout and no build directory.

  Add it after `:assemble` in your project's `mix.exs`:

      def project do
        [
          ...,
          releases: [
            my_app: [steps: [:assemble, &ZarrBridge.Release.bundle_python/1]]
          ]
        ]
      end

  The step makes sure the environment of `mix zarr_bridge.install` exists
  (installing it when needed), then copies its packages (the sidecar and
  its dependencies, without pip) into the release as
  `lib/zarr_bridge-VSN/priv/python_env/site`, with a manifest naming the
  Python version they were built for. A virtual environment cannot be
  moved; a plain directory on `PYTHONPATH` can. At run time
  `ZarrBridge.Sidecar` starts that Python (the interpreter the environment
  was made with when it exists on the host, else `python3.X` on the
  `PATH`) with `PYTHONPATH` pointing at the directory.

  The host needs only that Python (the same minor version as the build
  machine's, for the compiled packages such as numpy) and the same kind of
  system (glibc, CPU architecture) as the machine that built the release.
  """

  alias ZarrBridge.Sidecar.Launcher

  # What a release does not need from the environment's site-packages.
  @skip ~r/^(pip|setuptools|_distutils_hack|pkg_resources|distutils-precedence\.pth)($|-)/

  @doc "The release step (see the moduledoc)."
  @spec bundle_python(Mix.Release.t()) :: Mix.Release.t()
  def bundle_python(%Mix.Release{} = release) do
    {dir, manifest} = Mix.Tasks.ZarrBridge.Install.ensure!()
    site = site_packages!(dir)
    vsn = release.applications |> Map.fetch!(:zarr_bridge) |> Keyword.fetch!(:vsn)
    target = Path.join([release.path, "lib", "zarr_bridge-#{vsn}", "priv", "python_env"])

    File.rm_rf!(target)
    File.mkdir_p!(Path.join(target, "site"))

    site
    |> File.ls!()
    |> Enum.reject(&Regex.match?(@skip, &1))
    |> Enum.each(fn name -> copy!(Path.join(site, name), Path.join([target, "site", name])) end)

    Launcher.write_manifest!(target, [
      {"layout", "site"},
      {"version", manifest["version"]},
      {"python", manifest["python"]},
      {"python_version", manifest["python_version"]}
    ])

    Mix.shell().info(
      "* bundled the sidecar's Python packages (Python #{manifest["python_version"]}) " <>
        "into #{Path.relative_to_cwd(target)}"
    )

    release
  end

  defp site_packages!(dir) do
    case Path.wildcard(Path.join(dir, "venv/lib/python*/site-packages")) do
      [site] -> site
      other -> Mix.raise("cannot find the site-packages of #{dir}/venv (found #{inspect(other)})")
    end
  end

  # cp -a keeps modification times, so the bytecode pip compiled stays valid.
  defp copy!(from, to) do
    case System.cmd("cp", ["-a", from, to], stderr_to_stdout: true) do
      {_, 0} -> :ok
      {out, _} -> Mix.raise("cannot copy #{from} into the release: #{out}")
    end
  end
end
