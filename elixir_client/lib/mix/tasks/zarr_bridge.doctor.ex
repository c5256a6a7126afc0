defmodule Mix.Tasks.ZarrBridge.Doctor do
  @shortdoc "Checks that the ZarrBridge sidecar can serve, and says how to fix what is wrong"

  @moduledoc """
  Starts a sidecar the way the application would (with the options of
  `config :zarr_bridge, :sidecar, ...`) and prints, for a person:

    * which Python was chosen, by what (the `:python` option,
      `$ZARR_BRIDGE_PYTHON`, the environment `mix zarr_bridge.install`
      made, or this checkout's `.venv`; see `ZarrBridge.Sidecar`), and
      which environment it runs in;
    * the sidecar's version, protocol version and library versions;
    * the codecs available (and those missing, with why);
    * the use of `/dev/shm`, where large results are handed over;
    * the settings in effect;
    * every problem found, each with the fix to apply.

      mix zarr_bridge.doctor

  Exits with status 1 when the sidecar cannot serve (no Python, a Python
  without pybridge, a protocol mismatch, a sidecar that does not start);
  problems that leave it serving (a missing optional codec, `/dev/shm`
  missing or nearly full, running as root, a version difference) are
  reported as warnings and the status is 0.
  """

  use Mix.Task

  alias ZarrBridge.{Error, Report, Sidecar}
  alias ZarrBridge.Sidecar.Launcher

  # The probe runs in the chosen Python before the sidecar starts: where it
  # is, whether pybridge imports, who runs it and what /dev/shm holds. One
  # `zb:key=value` line each.
  @probe """
  import os, sys
  def out(k, v):
      print("zb:" + k + "=" + str(v).replace("\\n", " "))
  out("version", sys.version.split()[0])
  out("prefix", sys.prefix)
  out("venv", sys.prefix != sys.base_prefix)
  out("euid", os.geteuid())
  try:
      import pybridge
      out("pybridge", pybridge.__version__)
      out("pybridge_path", os.path.dirname(pybridge.__file__))
  except BaseException as e:
      out("pybridge_error", type(e).__name__ + ": " + str(e))
  try:
      st = os.statvfs("/dev/shm")
      out("shm_total", st.f_blocks * st.f_frsize)
      out("shm_free", st.f_bavail * st.f_frsize)
  except OSError as e:
      out("shm_error", e.strerror or str(e))
  """

  # numcodecs' optional codecs and the extra that brings each.
  @codec_extras %{
    "zfpy" => "zfpy",
    "pcodec" => "pcodec",
    "crc32c" => "crc32c",
    "msgpack2" => "msgpack"
  }

  @impl Mix.Task
  def run(argv) do
    OptionParser.parse!(argv, strict: [])
    Mix.Task.run("app.config")
    options = Report.sidecar_options()

    {sections, problems} = check(options)

    text =
      [
        "ZarrBridge doctor\n"
        | Enum.map(sections, fn {title, rows} -> "\n#{title}\n" <> Report.rows(rows) end)
      ]
      |> IO.iodata_to_binary()

    Mix.shell().info(text <> "\n" <> summary(problems))

    if Enum.any?(problems, &(elem(&1, 0) == :error)), do: exit({:shutdown, 1})
  end

  # -- the checks, in order -------------------------------------------------

  defp check(options) do
    case python_choice(options[:python]) do
      {:error, text} ->
        problem = {:error, "no Python for the sidecar: #{text}", python_fix()}
        {[{"python", [{"executable", "not found"}]}], [problem]}

      {:ok, python, why, launch_env} ->
        probe = probe(python, launch_env, options)
        python_section = {"python", python_rows(python, why, probe)}

        case probe do
          %{"pybridge" => _} ->
            {sidecar_sections, problems} = check_sidecar(python, probe, options)
            {[python_section | sidecar_sections], python_problems(probe) ++ problems}

          _ ->
            reason = probe["pybridge_error"] || probe["error"] || "it did not run"

            problem =
              {:error, "#{python} cannot import pybridge (#{reason})",
               "run `mix zarr_bridge.install`, or point ZARR_BRIDGE_PYTHON (or the :python " <>
                 "option) at a Python whose environment has pybridge installed"}

            {[python_section, {"sidecar", [{"status", "not started"}]}],
             [problem | python_problems(probe)]}
        end
    end
  end

  # The one place that asks which Python the sidecar will run (and why):
  # the launcher the sidecar itself uses.
  defp python_choice(option) do
    case Launcher.resolve(python: option) do
      {:ok, launch} -> {:ok, launch.python, launch.why, launch.env}
      {:error, %Error{message: text}} -> {:error, text}
    end
  end

  defp python_fix do
    "run `mix zarr_bridge.install`, or set ZARR_BRIDGE_PYTHON to a Python that has " <>
      "pybridge installed (or `config :zarr_bridge, :sidecar, python: \"/path/to/python\"`)"
  end

  defp probe(python, launch_env, options) do
    env = launch_env ++ for({k, v} <- Keyword.get(options, :env, []), do: {k, v})

    try do
      {out, status} = System.cmd(python, ["-c", @probe], env: env, stderr_to_stdout: true)

      values =
        for "zb:" <> line <- String.split(out, "\n"), into: %{} do
          [k, v] = String.split(line, "=", parts: 2)
          {k, v}
        end

      if status == 0 or map_size(values) > 0,
        do: values,
        else: %{"error" => "exit status #{status}: #{String.trim(out)}"}
    rescue
      error in ErlangError -> %{"error" => "cannot run it: #{inspect(error.original)}"}
    end
  end

  defp python_rows(python, why, probe) do
    env =
      case probe do
        %{"venv" => "True", "prefix" => prefix} -> "virtual environment #{prefix}"
        %{"prefix" => prefix} -> "system Python (#{prefix})"
        _ -> "unknown"
      end

    pybridge =
      case probe do
        %{"pybridge" => v, "pybridge_path" => path} -> "#{v} (#{path})"
        %{"pybridge_error" => e} -> "cannot be imported: #{e}"
        _ -> "unknown"
      end

    [
      {"executable", python},
      {"chosen by", why},
      {"version", probe["version"] || "unknown"},
      {"environment", env},
      {"pybridge", pybridge}
    ]
  end

  defp python_problems(probe) do
    root =
      if probe["euid"] == "0",
        do: [
          {:warning, "running as root: the sidecar can read and write every file on the machine",
           "run the BEAM as an unprivileged user, or confine the sidecar with " <>
             "`config :zarr_bridge, :sidecar, allowed_roots: [\"/your/data\"]`"}
        ],
        else: []

    root ++ shm_problems(probe)
  end

  defp shm_problems(%{"shm_error" => error}) do
    [
      {:warning,
       "/dev/shm is missing (#{error}): the shared-memory handoff is off, " <>
         "large results travel as streams (slower)",
       "mount a tmpfs at /dev/shm (in Docker: `--shm-size=1g`)"}
    ]
  end

  defp shm_problems(%{"shm_total" => total, "shm_free" => free}) do
    {total, free} = {String.to_integer(total), String.to_integer(free)}

    if free < max(64 * 1024 * 1024, div(total, 10)) do
      [
        {:warning,
         "/dev/shm is nearly full (#{Report.bytes(free)} free of #{Report.bytes(total)}): " <>
           "large results fall back to streams",
         "free space in /dev/shm (stale pybridge-* files of dead sidecars can go), or make it " <>
           "bigger (in Docker: `--shm-size=1g`)"}
      ]
    else
      []
    end
  end

  defp shm_problems(_probe), do: []

  defp check_sidecar(python, probe, options) do
    {pid, hello} = Report.start_sidecar()

    try do
      case hello do
        {:ok, hello} ->
          codecs = codecs(pid)

          sections = [
            {"sidecar", sidecar_rows(hello)},
            {"codecs", codec_rows(codecs)},
            {"shared memory (/dev/shm)", shm_rows(probe, hello)},
            {"settings", settings_rows(hello, options)}
          ]

          {sections, version_problems(hello) ++ codec_problems(codecs, python)}

        {:error, %Error{} = error} ->
          {[{"sidecar", [{"status", "cannot start"}]}], [start_problem(error, python)]}
      end
    after
      Report.stop_sidecar(pid)
    end
  end

  defp start_problem(%Error{code: :protocol_mismatch} = error, _python) do
    {:error, "version mismatch: #{error.message}",
     "install the pybridge that goes with this ZarrBridge (`mix zarr_bridge.install`)"}
  end

  defp start_problem(%Error{} = error, python) do
    {:error, "the sidecar does not start: #{error.message}",
     "read the sidecar's stderr above; `#{python} -m pybridge doctor` checks the Python side"}
  end

  defp codecs(pid) do
    case Sidecar.call(pid, "codec.list", %{}) do
      {:ok, %{"codecs" => codecs}} when is_list(codecs) -> codecs
      _ -> []
    end
  end

  defp sidecar_rows(hello) do
    versions = hello["versions"] || %{}
    client = client_version()

    [
      {"status", "serving (os pid #{hello["pid"]}, #{hello["workers"]} workers)"},
      {"pybridge", versions["pybridge"] || "unknown"},
      {"ZarrBridge", client},
      {"protocol", "#{hello["protocol"]} (this client speaks #{client_protocol()})"},
      {"capabilities", Enum.join(hello["capabilities"] || [], ", ")}
    ] ++
      for name <- ["python", "zarr", "numcodecs", "numpy", "msgpack"],
          Map.has_key?(versions, name),
          do: {name, versions[name]}
  end

  defp client_version do
    case Application.spec(:zarr_bridge, :vsn) do
      nil -> "unknown"
      vsn -> List.to_string(vsn)
    end
  end

  # The protocol this client speaks, as ZarrBridge.Sidecar announces it.
  defp client_protocol, do: "1.0"

  defp version_problems(hello) do
    pybridge = get_in(hello, ["versions", "pybridge"])
    client = client_version()

    if pybridge && client != "unknown" && pybridge != client do
      [
        {:warning,
         "version mismatch: the sidecar is pybridge #{pybridge}, this client is " <>
           "ZarrBridge #{client}",
         "install the pybridge that goes with this ZarrBridge (`mix zarr_bridge.install`)"}
      ]
    else
      []
    end
  end

  defp codec_rows(codecs) do
    available = for %{"available" => true, "id" => id} <- codecs, do: id
    missing = for %{"available" => false, "id" => id} = c <- codecs, do: {id, c["reason"]}
    forbidden = for %{"forbidden" => true, "id" => id} <- codecs, do: id

    [{"available", wrap(available)}] ++
      Enum.map(missing, fn {id, reason} -> {"unavailable", "#{id} (#{reason || "unknown"})"} end) ++
      if(forbidden == [],
        do: [],
        else: [
          {"refused", Enum.join(forbidden, ", ") <> " (runs code on decode; allow_pickle: true)"}
        ]
      )
  end

  # Names joined by ", " in lines of at most 64 characters.
  defp wrap(ids) do
    ids
    |> Enum.reduce([], fn
      id, [] ->
        [id]

      id, [line | done] ->
        if String.length(line) + 2 + String.length(id) > 64,
          do: [id, line <> "," | done],
          else: [line <> ", " <> id | done]
    end)
    |> Enum.reverse()
    |> Enum.join("\n")
  end

  defp codec_problems(codecs, python) do
    for %{"available" => false, "id" => id} = c <- codecs do
      fix =
        case @codec_extras do
          %{^id => extra} ->
            "`#{python} -m pip install 'numcodecs[#{extra}]'`"

          _ ->
            "reinstall numcodecs in that environment (`#{python} -m pip install --force-reinstall numcodecs`)"
        end

      {:warning,
       "codec #{id} is unavailable (#{c["reason"] || "unknown"}): arrays that use it " <>
         "cannot be read or written", fix}
    end
  end

  defp shm_rows(probe, hello) do
    handoff = "handoff" in (hello["capabilities"] || [])
    threshold = get_in(hello, ["limits", "handoff_threshold"])

    usage =
      case probe do
        %{"shm_total" => total, "shm_free" => free} ->
          {total, free} = {String.to_integer(total), String.to_integer(free)}
          percent = if total > 0, do: div(free * 100, total), else: 0
          "#{Report.bytes(total - free)} used of #{Report.bytes(total)} (#{percent}% free)"

        %{"shm_error" => error} ->
          "missing (#{error})"

        _ ->
          "unknown"
      end

    state =
      cond do
        not handoff -> "off (this sidecar has no handoff)"
        Map.has_key?(probe, "shm_error") -> "off: no /dev/shm (large results travel as streams)"
        is_integer(threshold) -> "on, for results of #{Report.bytes(threshold)} and more"
        true -> "on"
      end

    [{"handoff", state}, {"usage", usage}]
  end

  defp settings_rows(hello, options) do
    limits = hello["limits"] || %{}

    limit = fn key ->
      case limits[key] do
        n when is_integer(n) and key != "max_in_flight" -> Report.bytes(n)
        n when is_integer(n) -> Integer.to_string(n)
        _ -> "default"
      end
    end

    roots =
      case Keyword.get(options, :allowed_roots, []) do
        [] -> "none (any path may be opened)"
        roots -> Enum.map_join(roots, "\n", &Path.expand/1)
      end

    env =
      case Keyword.get(options, :env, []) do
        [] -> "none"
        env -> Enum.map_join(env, "\n", fn {k, v} -> "#{k}=#{v}" end)
      end

    [
      {"workers", "#{hello["workers"]}"},
      {"max_request_bytes", limit.("max_request_bytes")},
      {"max_frame_bytes", limit.("max_frame_bytes")},
      {"stream_frame_bytes", limit.("stream_frame_bytes")},
      {"max_in_flight", limit.("max_in_flight")},
      {"handoff_threshold", limit.("handoff_threshold")},
      {"call_timeout", "#{Keyword.get(options, :call_timeout, 30_000)} ms"},
      {"allowed_roots", roots},
      {"allow_pickle", "#{Keyword.get(options, :allow_pickle, false)}"},
      {"env", env},
      {"args",
       Enum.join(Keyword.get(options, :args, []), " ")
       |> then(&if(&1 == "", do: "none", else: &1))}
    ]
  end

  # -- the verdict ----------------------------------------------------------

  defp summary([]), do: "No problems found: the sidecar can serve."

  defp summary(problems) do
    {errors, warnings} = Enum.split_with(problems, &(elem(&1, 0) == :error))

    list =
      (errors ++ warnings)
      |> Enum.with_index(1)
      |> Enum.map_join("", fn {{severity, text, fix}, i} ->
        label = if severity == :error, do: "ERROR", else: "warning"
        "  #{i}. #{label}: #{text}\n     fix: #{fix}\n"
      end)

    verdict =
      if errors == [],
        do: "The sidecar can serve (#{count(warnings, "warning")}).",
        else:
          "The sidecar cannot serve (#{count(errors, "error")}, #{count(warnings, "warning")})."

    "problems\n" <> list <> "\n" <> verdict
  end

  defp count([_], noun), do: "1 #{noun}"
  defp count(list, noun), do: "#{length(list)} #{noun}s"
end
