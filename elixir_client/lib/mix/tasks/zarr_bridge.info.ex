defmodule Mix.Tasks.ZarrBridge.Info do
  @shortdoc "Describes a Zarr store: its tree, each array's layout, codecs and stored size"

  @moduledoc """
  Prints what one asks first about unknown Zarr data.

      mix zarr_bridge.info PATH [--node NODE] [--storage filesystem|zip]
      mix zarr_bridge.info BUCKET[/PREFIX] --storage s3|gcs|azure|azure_blob
          [--region R] [--endpoint-url URL] [--anonymous] [--engine obstore|fsspec]
      mix zarr_bridge.info URL --storage http|url [--anonymous] [--engine ...]

  `PATH` is a directory (a filesystem store) or a zip file (a zip store; a
  regular file is taken as one). `--node` names a group or array inside the
  store (default: the store's root).

  For an object store (see `ZarrBridge.Store`) the argument is the bucket
  (the Azure container) and an optional key prefix, or the store's URL for
  `--storage http` and `--storage url` (`s3://…`, `gs://…`, `az://…`,
  `https://…`). Credentials are never given on the command line: the
  sidecar reads them from its environment (`AWS_ACCESS_KEY_ID`,
  `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_CONNECTION_STRING`, …),
  or `--anonymous` sends unsigned requests.

  For a group it prints the format, the attributes and the tree of groups
  and arrays, then every array below it; for an array, the array. For each
  array: the format, shape, chunks, shards, dtype, fill value, codecs,
  dimension names and attributes, how many chunks (shards for a sharded
  array) are stored out of the chunk grid, the stored size (the chunks'
  bytes, metadata documents not counted), the size in memory and the
  compression ratio (size in memory / stored size).

  Nothing is read but metadata and the store's listing: the chunk count and
  sizes come from the sidecar's `array.stats`, which lists the keys and
  their sizes without reading them.

  The task starts its own sidecar with the options the application gives
  its default one (`config :zarr_bridge, :sidecar, ...`); see
  `mix zarr_bridge.doctor` when it cannot start.
  """

  use Mix.Task

  alias ZarrBridge.{Error, Group, Report, Sidecar}

  @switches [
    node: :string,
    storage: :string,
    region: :string,
    endpoint_url: :string,
    anonymous: :boolean,
    engine: :string
  ]

  @usage "usage: mix zarr_bridge.info PATH [--node NODE] " <>
           "[--storage filesystem|zip|s3|gcs|azure|azure_blob|http|url]"

  @impl Mix.Task
  def run(argv) do
    {opts, args} = OptionParser.parse!(argv, strict: @switches)

    arg =
      case args do
        [arg] -> arg
        _ -> Mix.raise(@usage)
      end

    store_opts = store_options!(opts, arg)
    node = ZarrBridge.Options.normalize_node(opts[:node] || "")

    {pid, hello} = Report.start_sidecar()

    try do
      case hello do
        {:ok, _} ->
          :ok

        {:error, %Error{} = error} ->
          Mix.raise(
            "the sidecar cannot start: #{Exception.message(error)}\n" <>
              "Run `mix zarr_bridge.doctor` to see why and how to fix it."
          )
      end

      where = store_opts ++ [node: node, server: pid]
      Mix.shell().info(describe(where, pid))
    after
      Report.stop_sidecar(pid)
    end
  end

  @remote ~w(s3 gcs azure azure_blob http url)

  defp store_options!(opts, arg) do
    case opts[:storage] do
      name when name in @remote ->
        remote_options!(String.to_existing_atom(name), arg, opts)

      name ->
        if Enum.any?([:region, :endpoint_url, :anonymous, :engine], &Keyword.has_key?(opts, &1)),
          do:
            Mix.raise("--region, --endpoint-url, --anonymous and --engine are for object stores")

        path = Path.expand(arg)
        [storage: storage!(name, path), path: path]
    end
  end

  defp remote_options!(storage, arg, opts) do
    where =
      if storage in [:http, :url] do
        [url: arg]
      else
        case String.split(arg, "/", parts: 2) do
          [bucket] -> [bucket: bucket]
          [bucket, prefix] -> [bucket: bucket, prefix: prefix]
        end
      end

    extra =
      opts
      |> Keyword.take([:region, :endpoint_url, :anonymous])
      |> then(fn extra ->
        case opts[:engine] do
          nil ->
            extra

          engine when engine in ["obstore", "fsspec"] ->
            [{:engine, String.to_atom(engine)} | extra]

          engine ->
            Mix.raise("--engine must be obstore or fsspec, got: #{engine}")
        end
      end)

    store_opts = [storage: storage] ++ where ++ extra

    try do
      ZarrBridge.Store.build!(store_opts)
    rescue
      error in ArgumentError -> Mix.raise("#{arg}: #{Exception.message(error)}")
    end

    store_opts
  end

  defp storage!(nil, path) do
    cond do
      File.dir?(path) -> :filesystem
      File.regular?(path) -> :zip
      true -> Mix.raise("#{path}: no such file or directory")
    end
  end

  defp storage!(name, _path) when name in ["filesystem", "zip"], do: String.to_atom(name)

  defp storage!(name, _path),
    do:
      Mix.raise(
        "--storage must be filesystem, zip, s3, gcs, azure, azure_blob, http or url, got: #{name}"
      )

  # -- what is there ----------------------------------------------------

  defp describe(where, pid) do
    case Group.open(Keyword.put(where, :mode, :r)) do
      {:ok, group} ->
        describe_group(group, where, pid)

      {:error, %Error{code: :not_found}} ->
        case ZarrBridge.open(Keyword.put(where, :mode, :r)) do
          {:ok, array} ->
            header(where, "Zarr v#{array.metadata.zarr_format} array") <>
              "\n" <> describe_array(where, array.node, pid)

          {:error, %Error{} = error} ->
            no_node!(where, error)
        end

      {:error, %Error{} = error} ->
        no_node!(where, error)
    end
  end

  defp no_node!(where, error) do
    Mix.raise("#{location(where)} holds no Zarr array or group: #{Exception.message(error)}")
  end

  defp location(where) do
    {_storage, place, _store} = ZarrBridge.Store.build!(where)

    case where[:node] do
      "" -> place
      node -> "#{place} (node #{node})"
    end
  end

  defp header(where, kind) do
    location(where) <>
      "\n" <> Report.rows([{"storage", Atom.to_string(where[:storage])}, {"node", kind}])
  end

  defp describe_group(group, where, pid) do
    nodes = tree_nodes!(group, pid)
    arrays = for %{"kind" => "array", "path" => path} <- nodes, do: path
    groups = Enum.count(nodes, &(&1["kind"] == "group"))

    kind =
      "Zarr v#{group.zarr_format} group" <>
        if(group.consolidated, do: " (consolidated metadata)", else: "")

    summary = [
      {"storage", Atom.to_string(where[:storage])},
      {"node", kind},
      {"below it", "#{count(length(arrays), "array")}, #{count(groups, "group")}"}
      | attribute_rows(group.attributes)
    ]

    tree = Group.tree!(group)

    sections = Enum.map(arrays, &describe_array(where, &1, pid))

    Enum.join(
      [location(where) <> "\n" <> Report.rows(summary), "tree\n" <> indent(tree) | sections],
      "\n"
    )
  end

  defp count(1, noun), do: "1 #{noun}"
  defp count(n, noun), do: "#{n} #{noun}s"

  defp tree_nodes!(group, pid) do
    params = %{"store" => group.store, "path" => group.node}

    case Sidecar.call(pid, "group.tree", params) do
      {:ok, %{"nodes" => nodes}} -> nodes
      {:error, error} -> Mix.raise("cannot list #{group.path}: #{Exception.message(error)}")
    end
  end

  defp indent(text) do
    text
    |> String.trim_trailing()
    |> String.split("\n")
    |> Enum.map_join("", &("  " <> &1 <> "\n"))
  end

  # -- one array ----------------------------------------------------------

  # From the sidecar's metadata map as it is (PROTOCOL.md §7), so that the
  # codecs are shown with the configuration stored in the array.
  defp describe_array(where, node, pid) do
    params = %{"store" => store(where, node), "path" => node}
    meta = call!(pid, "array.open", Map.put(params, "mode", "r"), node)["metadata"]
    stats = call!(pid, "array.stats", params, node)
    name = if node == "", do: "/", else: node

    rows =
      [
        {"format", "Zarr v#{meta["zarr_format"]}"},
        {"shape", Report.shape(meta["shape"])},
        {"chunks", Report.shape(meta["chunks"])},
        {"shards", Report.shape(meta["shards"])},
        {"dtype", dtype(meta["dtype"])},
        {"fill value", Report.value(meta["fill_value"])}
      ] ++
        codec_rows(meta) ++
        [{"dimension names", dimension_names(meta["dimension_names"])}] ++
        attribute_rows(meta["attributes"] || %{}) ++ storage_rows(meta, stats)

    "array #{name}\n" <> Report.rows(rows)
  end

  defp store(where, _node) do
    {_storage, _path, store} = ZarrBridge.Options.store!(where)
    store
  end

  defp call!(pid, method, params, node) do
    case Sidecar.call(pid, method, params) do
      {:ok, result} ->
        result

      {:error, error} ->
        Mix.raise("cannot describe the array #{inspect(node)}: #{Exception.message(error)}")
    end
  end

  defp dtype(wire) when is_binary(wire), do: wire
  defp dtype(wire), do: Report.value(wire)

  defp dimension_names(nil), do: "none"
  defp dimension_names(names), do: Enum.map_join(names, ", ", &(&1 || "-"))

  defp attribute_rows(attrs) when attrs == %{}, do: [{"attributes", "none"}]

  defp attribute_rows(attrs) do
    text =
      attrs
      |> Enum.sort_by(fn {k, _} -> to_string(k) end)
      |> Enum.map_join("\n", fn {k, v} -> "#{k}: #{Report.value(v)}" end)

    [{"attributes", text}]
  end

  # v3: the codec chain (for a sharded array: the sharding codec, the
  # chain inside the shards and the shard index's); v2: the filters, then
  # the compressor.
  defp codec_rows(%{"zarr_format" => 3, "codecs" => codecs}) when is_list(codecs) do
    case codecs do
      [%{"name" => "sharding_indexed", "configuration" => conf}] ->
        [
          {"codecs",
           codec("sharding_indexed", Map.take(conf, ["chunk_shape", "index_location"]))},
          {"inner codecs", chain(conf["codecs"] || [])},
          {"index codecs", chain(conf["index_codecs"] || [])}
        ]

      _ ->
        [{"codecs", chain(codecs)}]
    end
  end

  defp codec_rows(meta) do
    filters =
      for %{"id" => id} = config <- meta["filters"] || [], do: codec(id, Map.delete(config, "id"))

    compressor =
      case meta["compressor"] do
        %{"id" => id} = config -> codec(id, Map.delete(config, "id"))
        _ -> "none"
      end

    [
      {"filters", if(filters == [], do: "none", else: Enum.join(filters, " → "))},
      {"compressor", compressor}
    ]
  end

  defp chain([]), do: "none"

  defp chain(codecs) do
    Enum.map_join(codecs, " → ", fn c ->
      codec(c["name"], c["configuration"] || %{})
    end)
  end

  defp codec(name, config) when config == %{}, do: name

  defp codec(name, config) do
    args =
      config
      |> Enum.map(fn {k, v} -> {to_string(k), v} end)
      |> Enum.sort()
      |> Enum.map_join(", ", fn {k, v} -> "#{k}: #{Report.value(v)}" end)

    "#{name}(#{args})"
  end

  defp storage_rows(meta, stats) do
    what = if meta["shards"], do: "shards", else: "chunks"
    stored = stats["bytes_stored"]
    nbytes = stats["bytes"]
    variable = meta["dtype"] in ["string", "bytes"]

    ratio =
      cond do
        variable -> "- (variable-length dtype)"
        stored == 0 -> "- (nothing stored)"
        true -> :erlang.float_to_binary(nbytes / stored, decimals: 2)
      end

    [
      {"#{what} stored", "#{stats["chunks_stored"]} of #{stats["chunks_total"]}"},
      {"stored size", Report.bytes(stored)},
      {"size in memory",
       if(variable, do: "- (variable-length dtype)", else: Report.bytes(nbytes))},
      {"compression ratio", ratio}
    ]
  end
end
