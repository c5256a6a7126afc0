defmodule Mix.Tasks.Compile.ZarrBridgePython do
  @moduledoc """
  Copies the sidecar's Python source into `priv/python` (a Mix compiler of
  `:zarr_bridge`, run by `mix compile`).

  The repository keeps one copy of the source, `pybridge/` at its top, with
  `pyproject.toml` and `constraints.txt`. When that directory is next to the
  Elixir project (a checkout, a path dependency, a git dependency with
  `subdir: "elixir_client"`), this compiler mirrors it into `priv/python`,
  which is git-ignored and which the Hex package ships (see `package` in
  `mix.exs`). Where it is not (a Hex package, which already has
  `priv/python`), it does nothing. `mix zarr_bridge.install` installs from
  `priv/python`.
  """

  use Mix.Task.Compiler

  @top_files ["pyproject.toml", "constraints.txt"]

  @impl true
  def run(_args) do
    project_dir = Path.dirname(Mix.Project.project_file())
    source = Path.expand("..", project_dir)
    target = Path.join(project_dir, "priv/python")

    if File.regular?(Path.join([source, "pybridge", "__init__.py"])) do
      result = sync(source, target)
      # On the first build priv/ did not exist yet when Mix linked the
      # build's priv to it: link it now.
      Mix.Project.build_structure()
      result
    else
      {:noop, []}
    end
  end

  @doc false
  # Mirrors the source files into `target`; {:ok, []} when something changed.
  @spec sync(Path.t(), Path.t()) :: {:ok | :noop, []}
  def sync(source, target) do
    wanted = Enum.map(source_files(source), fn rel -> {rel, Path.join(source, rel)} end)

    names = MapSet.new(wanted, &elem(&1, 0))

    copied =
      Enum.count(wanted, fn {rel, from} ->
        to = Path.join(target, rel)
        content = File.read!(from)

        if File.read(to) == {:ok, content} do
          false
        else
          File.mkdir_p!(Path.dirname(to))
          File.write!(to, content)
          true
        end
      end)

    stale =
      target
      |> Path.join("**")
      |> Path.wildcard(match_dot: true)
      |> Enum.filter(&File.regular?/1)
      |> Enum.reject(&MapSet.member?(names, Path.relative_to(&1, target)))

    Enum.each(stale, &File.rm!/1)
    remove_empty_dirs(target)
    if copied + length(stale) > 0, do: {:ok, []}, else: {:noop, []}
  end

  # Directories a moved module left behind (deepest first).
  defp remove_empty_dirs(target) do
    target
    |> Path.join("**")
    |> Path.wildcard(match_dot: true)
    |> Enum.filter(&File.dir?/1)
    |> Enum.sort_by(&(-length(Path.split(&1))))
    |> Enum.each(fn dir -> if File.ls!(dir) == [], do: File.rmdir!(dir) end)
  end

  @doc false
  # The files the sidecar's distribution is built from, relative to `source`.
  @spec source_files(Path.t()) :: [Path.t()]
  def source_files(source) do
    package =
      source
      |> Path.join("pybridge/**/*.{py,typed}")
      |> Path.wildcard()
      |> Enum.map(&Path.relative_to(&1, source))

    Enum.sort(package ++ Enum.filter(@top_files, &File.regular?(Path.join(source, &1))))
  end
end
