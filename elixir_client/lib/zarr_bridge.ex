defmodule ZarrBridge do
  @moduledoc """
  Zarr arrays and numcodecs codecs for Elixir, served by a supervised Python
  sidecar (`pybridge`).

  The application starts one sidecar, `ZarrBridge.Sidecar`, which speaks the
  msgpack protocol of `protocol/PROTOCOL.md` to a long-running
  `python -m pybridge` process, with zarr-python and numcodecs as the
  engine. Every failure is returned as `{:error, %ZarrBridge.Error{}}`, and
  every function has a bang variant that raises it.

  The API follows ExZarr's:

    * `create/1` and `open/1` give a `ZarrBridge.Array`;
    * `ZarrBridge.Array` reads and writes slices (nested tuples, or
      `ZarrBridge.NDArray` for large data), attributes, and raw chunks, and
      resizes and appends;
    * `ZarrBridge.Group` creates, opens and walks groups;
    * `consolidate_metadata/1` writes a group's consolidated metadata;
    * `ZarrBridge.Codecs` runs any numcodecs codec on binaries.

  ## Stores

  Every function that names a node takes the same three options:

    * `:storage` - `:filesystem` (the default: a directory), `:zip` (a zip
      file, read and written, Zarr v2 and v3) or `:memory` (a store named
      `path` held inside the sidecar, alive as long as the sidecar process);
    * `:path` - the directory, the zip file, or the memory store's name;
    * `:node` - the path of the array or group inside the store (default
      `""`, the store's root). An array inside a group or a zip is opened
      by that path, e.g. `node: "labels/names"`.

  ## Example

  (These examples run as doctests against a real sidecar; the directory
  `dir` is a fresh temporary directory.)

      iex> dir = ZarrBridge.Test.DocFiles.dir()
      iex> {:ok, array} =
      ...>   ZarrBridge.create(
      ...>     shape: {500, 500},
      ...>     chunks: {50, 50},
      ...>     dtype: :int32,
      ...>     compressor: :zlib,
      ...>     storage: :filesystem,
      ...>     path: Path.join(dir, "results"),
      ...>     zarr_version: 2
      ...>   )
      iex> ZarrBridge.Array.set_slice(array, {{1, 2}, {3, 4}}, start: {0, 0}, stop: {2, 2})
      :ok
      iex> ZarrBridge.Array.put_attributes(array, %{"units" => "counts"})
      :ok
      iex> {:ok, array} = ZarrBridge.open(storage: :filesystem, path: Path.join(dir, "results"))
      iex> ZarrBridge.Array.get_slice(array, start: {0, 0}, stop: {2, 3})
      {:ok, {{1, 2, 0}, {3, 4, 0}}}
      iex> {:ok, root} = ZarrBridge.Group.create(storage: :zip, path: Path.join(dir, "archive.zip"))
      iex> {:ok, _} = ZarrBridge.Group.create_array(root, "labels/names", shape: {2}, dtype: :string)
      iex> {:ok, names} = ZarrBridge.open(storage: :zip, path: Path.join(dir, "archive.zip"),
      ...>                                node: "labels/names")
      iex> names.metadata.shape
      {2}

  Both Zarr formats are read and written (the format of an existing array is
  detected from its `.zarray` or `zarr.json`), and the arrays are the same
  files zarr-python reads and writes.
  """

  alias ZarrBridge.{Array, CodecSpec, Dtype, Error, Group, Metadata, Options, Sidecar}

  @type mode :: :r | :"r+" | :a | :w | :"w-"
  @type storage :: :filesystem | :zip | :memory

  @store_keys [:storage, :path, :node, :server, :timeout]

  @create_keys [
                 :shape,
                 :chunks,
                 :dtype,
                 :compressor,
                 :filters,
                 :fill_value,
                 :order,
                 :dimension_separator,
                 :chunk_key_encoding,
                 :zarr_version,
                 :codecs,
                 :shards,
                 :dimension_names,
                 :attributes,
                 :mode
               ] ++ @store_keys

  @open_keys [:mode | @store_keys]
  @modes [:r, :"r+", :a, :w, :"w-"]

  @doc """
  Creates an array and returns it.

  ## Options

    * `:storage`, `:path` (required), `:node` - where (see "Stores" in the
      module doc). Relative filesystem and zip paths are expanded against
      the current directory.
    * `:shape` (required) - a tuple of non-negative integers.
    * `:dtype` (required) - an Elixir dtype (see `ZarrBridge.NDArray`), e.g.
      `:float64`, `:int32`, `:bool`, `{:datetime64, :ns}`, `:string`,
      `[{"x", :int32}, {"y", :float64}]`; a wire name such as `"float64"`
      is accepted too.
    * `:chunks` - a tuple of positive integers (default: the shape, one
      chunk; a zero length becomes 1).
    * `:zarr_version` - `2` or `3` (default `3`).
    * `:compressor` - a codec (`:zlib`, `:gzip`, `:zstd`, `:lz4`, `:blosc`,
      `:bz2`/`:bzip2`, `:lzma`, `{:blosc, cname: "zstd", clevel: 3,
      shuffle: :shuffle}`, a numcodecs config map, … see
      `ZarrBridge.Codecs`), or `nil` for no compression. When the option is
      **absent**, zarr-python's default applies: `zstd` at level 0 (for both
      formats, as zarr-python 3 does). Codec options left out take numcodecs'
      defaults (`:zlib` is level 1).
    * `:filters` - a list of codecs applied before the compressor, e.g.
      `[:shuffle, {:delta, dtype: :int32}]`, or `nil`. A `:shuffle` without
      `elementsize` gets the dtype's item size, and a `:delta`, `:quantize`
      or `:fixedscaleoffset` without `dtype` gets the array's dtype. For v3
      they become the equivalent v3 codecs.
    * `:codecs` - v3 only: the full codec list as v3 JSON maps with string
      keys (`%{"name" => "bytes", "configuration" => %{"endian" => "little"}}`),
      instead of `:compressor`/`:filters`.
    * `:shards` - v3 only: the shard shape (a tuple of multiples of
      `:chunks`).
    * `:fill_value` - the value of unwritten elements (zarr-python's default
      when absent: zero, `false`, NaT, `""`, …). `:nan`, `:infinity`,
      `:neg_infinity`, `{re, im}` and, for a structured dtype, a map of
      field values are accepted.
    * `:order` - `"C"`/`:c` or `"F"`/`:f` (the memory order of v2 chunks;
      v3 stores C order only).
    * `:dimension_separator` - `"."` or `"/"` for the chunk keys (defaults:
      `"."` for v2, `"/"` for v3).
    * `:chunk_key_encoding` - v3: `{:default, "/" | "."}` (chunk keys
      `c/0/1`, the default) or `{:v2, "." | "/"}` (keys `0.1`, as v2 has);
      a bare `:default` or `:v2` takes that encoding's default separator.
    * `:dimension_names` - v3 only: a list of names (strings or `nil`).
    * `:attributes` - a map of user attributes.
    * `:mode` - `:"w-"` (default: fail with `:already_exists` if something
      is there), `:w` (overwrite), `:a` (open if it exists, create
      otherwise), `:r`/`:"r+"` (open only).
    * `:server` - the sidecar (default `ZarrBridge.Sidecar`);
      `:timeout` - in milliseconds.

  Unknown options, and options of the wrong type, raise `ArgumentError`.

  ## Errors

  `:already_exists`, `:unsupported_dtype`, `:codec_unavailable`,
  `:invalid_codec_config`, `:invalid_params`, `:store_error`,
  `:forbidden_path`, and the sidecar's errors (`:timeout`, …).
  """
  @spec create(keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def create(opts) when is_list(opts) do
    Options.check!(opts, @create_keys)
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    mode = Options.mode!(Keyword.get(opts, :mode, :"w-"), @modes)
    shape = int_tuple!(opts, :shape, required: true)
    format = Options.zarr_version!(opts, 3)

    chunks =
      int_tuple!(opts, :chunks) ||
        shape |> Tuple.to_list() |> Enum.map(&max(&1, 1)) |> List.to_tuple()

    with {:ok, dtype} <- dtype(opts),
         {:ok, wire_dtype} <- Dtype.to_wire(dtype),
         {:ok, codec_params} <- codec_params(opts, dtype),
         {:ok, optional} <- optional_params(opts, dtype) do
      params =
        %{
          "store" => store,
          "path" => node,
          "mode" => Atom.to_string(mode),
          "zarr_format" => format,
          "shape" => Tuple.to_list(shape),
          "chunks" => Tuple.to_list(chunks),
          "dtype" => wire_dtype
        }
        |> Map.merge(codec_params)
        |> Map.merge(optional)

      opts
      |> Options.server()
      |> Sidecar.call("array.create", params, Options.call_opts(opts))
      |> array_result(opts, {storage, path, store, node}, mode)
    end
  end

  @doc "Like `create/1`, but raises `ZarrBridge.Error`."
  @spec create!(keyword) :: Array.t()
  def create!(opts), do: Options.bang(create(opts))

  @doc """
  Opens an existing array (Zarr v2 or v3, detected from its metadata).

  ## Options

    * `:storage`, `:path` (required), `:node` - where (see "Stores" in the
      module doc).
    * `:mode` - `:"r+"` (default: read and write), `:r` (read only: writes
      fail with `:read_only`) or `:a` (the same as `:"r+"` for an existing
      array). Opening never creates an array; use `create/1` for that.
      (The default is `:"r+"` rather than zarr-python's `"r"` so that an
      array opened with ExZarr's call can be updated, as ExZarr allows.)
    * `:server` - the sidecar (default `ZarrBridge.Sidecar`);
      `:timeout` - in milliseconds.

  When the store holds consolidated metadata above the array, the sidecar
  uses it, as zarr-python does.

  ## Errors

  `:not_found` (no array there, or a group), `:unsupported_dtype`,
  `:codec_unavailable` (the array uses a codec the sidecar lacks),
  `:invalid_metadata`, `:forbidden_path`, and the sidecar's errors.
  """
  @spec open(keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def open(opts) when is_list(opts) do
    Options.check!(opts, @open_keys)
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    mode = Options.mode!(Keyword.get(opts, :mode, :"r+"), [:r, :"r+", :a])
    # Opening only reads metadata; the mode is kept in the struct for writes.
    params = %{"store" => store, "path" => node, "mode" => "r"}

    opts
    |> Options.server()
    |> Sidecar.call("array.open", params, Options.call_opts(opts))
    |> array_result(opts, {storage, path, store, node}, mode)
  end

  @doc "Like `open/1`, but raises `ZarrBridge.Error`."
  @spec open!(keyword) :: Array.t()
  def open!(opts), do: Options.bang(open(opts))

  @doc """
  Writes the consolidated metadata of the group at `node:` (every array's
  and group's metadata below it, in one document: v2 `.zmetadata`, or
  zarr-python's v3 form inside `zarr.json`) and returns the group.

  Opening an array or group below it then reads the consolidated document
  (zarr-python's default behaviour), so a store with many nodes opens with
  one read. Consolidate again after adding nodes or changing attributes.

  Options: `:storage`, `:path` (required), `:node` (see "Stores" in the
  module doc), `:server`, `:timeout`.

  Errors: `:not_found` (no group there), `:read_only`, `:store_error`,
  `:forbidden_path`.
  """
  @spec consolidate_metadata(keyword) :: {:ok, Group.t()} | {:error, Error.t()}
  def consolidate_metadata(opts) when is_list(opts) do
    Options.check!(opts, @store_keys)
    {storage, path, store} = Options.store!(opts)
    node = Options.node!(opts)
    params = %{"store" => store, "path" => node}

    case Sidecar.call(
           Options.server(opts),
           "store.consolidate_metadata",
           params,
           Options.call_opts(opts)
         ) do
      {:ok, %{"group" => info}} ->
        Group.from_info(info, %{
          storage: storage,
          path: path,
          store: store,
          node: node,
          server: Options.server(opts),
          mode: :"r+"
        })

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  @doc "Like `consolidate_metadata/1`, but raises `ZarrBridge.Error`."
  @spec consolidate_metadata!(keyword) :: Group.t()
  def consolidate_metadata!(opts), do: Options.bang(consolidate_metadata(opts))

  # ------------------------------------------------------------------

  defp array_result(result, opts, {storage, path, store, node}, mode) do
    case result do
      {:ok, %{"metadata" => wire}} ->
        with {:ok, metadata} <- Metadata.from_wire(wire) do
          {:ok,
           %Array{
             metadata: metadata,
             storage: storage,
             path: path,
             node: node,
             mode: mode,
             server: Options.server(opts),
             store: store
           }}
        end

      {:ok, other} ->
        Options.unexpected(other)

      {:error, %Error{}} = error ->
        error
    end
  end

  defp codec_params(opts, dtype) do
    with {:ok, params} <- compressor_param(opts),
         {:ok, params} <- filters_param(opts, dtype, params) do
      case Keyword.fetch(opts, :codecs) do
        {:ok, codecs} when is_list(codecs) ->
          {:ok, Map.put(params, "codecs", codecs)}

        {:ok, nil} ->
          {:ok, params}

        {:ok, other} ->
          raise ArgumentError, "codecs must be a list of v3 codec maps, got: #{inspect(other)}"

        :error ->
          {:ok, params}
      end
    end
  end

  defp compressor_param(opts) do
    case Keyword.fetch(opts, :compressor) do
      {:ok, form} ->
        with {:ok, config} <- CodecSpec.to_config_or_nil(form),
             do: {:ok, %{"compressor" => config}}

      :error ->
        {:ok, %{}}
    end
  end

  defp filters_param(opts, dtype, params) do
    case Keyword.fetch(opts, :filters) do
      {:ok, forms} ->
        with {:ok, configs} <- CodecSpec.to_configs(forms) do
          configs = configs && Enum.map(configs, &CodecSpec.with_dtype(&1, dtype))
          {:ok, Map.put(params, "filters", configs)}
        end

      :error ->
        {:ok, params}
    end
  end

  defp optional_params(opts, dtype) do
    Enum.reduce_while(opts, {:ok, %{}}, fn {key, value}, {:ok, acc} ->
      case optional_param(key, value, opts, dtype) do
        :skip -> {:cont, {:ok, acc}}
        {:ok, wire_key, wire} -> {:cont, {:ok, Map.put(acc, wire_key, wire)}}
        {:error, %Error{}} = error -> {:halt, error}
      end
    end)
  end

  defp optional_param(:fill_value, value, _opts, dtype) do
    with {:ok, wire} <- Metadata.fill_value_to_wire(value, dtype), do: {:ok, "fill_value", wire}
  end

  defp optional_param(:order, order, _opts, _dtype), do: {:ok, "order", order!(order)}

  defp optional_param(:dimension_separator, sep, _opts, _dtype),
    do: {:ok, "dimension_separator", separator!(sep, :dimension_separator)}

  defp optional_param(:chunk_key_encoding, encoding, _opts, _dtype),
    do: {:ok, "chunk_key_encoding", chunk_key_encoding!(encoding)}

  defp optional_param(:shards, _, opts, _dtype),
    do: {:ok, "shards", opts |> int_tuple!(:shards) |> list_or_nil()}

  defp optional_param(:dimension_names, names, _opts, _dtype),
    do: {:ok, "dimension_names", names!(names)}

  defp optional_param(:attributes, attrs, _opts, _dtype),
    do: {:ok, "attributes", Options.attributes!(attrs)}

  defp optional_param(_key, _value, _opts, _dtype), do: :skip

  defp list_or_nil(nil), do: nil
  defp list_or_nil(tuple), do: Tuple.to_list(tuple)

  defp dtype(opts) do
    case Keyword.fetch(opts, :dtype) do
      {:ok, dtype} -> dtype |> Options.text() |> Dtype.normalize()
      :error -> raise ArgumentError, "the :dtype option is required"
    end
  end

  defp int_tuple!(opts, key, flags \\ []) do
    case Keyword.fetch(opts, key) do
      {:ok, tuple} when is_tuple(tuple) ->
        if Enum.all?(Tuple.to_list(tuple), &(is_integer(&1) and &1 >= 0)),
          do: tuple,
          else:
            raise(
              ArgumentError,
              "#{key} must be a tuple of non-negative integers, got: #{inspect(tuple)}"
            )

      {:ok, nil} when flags == [] ->
        nil

      {:ok, other} ->
        raise ArgumentError,
              "#{key} must be a tuple of non-negative integers, got: #{inspect(other)}"

      :error ->
        if flags[:required],
          do: raise(ArgumentError, "the #{inspect(key)} option is required"),
          else: nil
    end
  end

  defp order!(order) when order in ["C", :c, :C], do: "C"
  defp order!(order) when order in ["F", :f, :F], do: "F"

  defp order!(order),
    do: raise(ArgumentError, ~s(order must be "C" or "F", got: #{inspect(order)}))

  defp separator!(sep, _key) when sep in [".", "/"], do: sep

  defp separator!(sep, key),
    do: raise(ArgumentError, ~s(#{key} separator must be "." or "/", got: #{inspect(sep)}))

  defp chunk_key_encoding!(:default), do: chunk_key_encoding!({:default, "/"})
  defp chunk_key_encoding!(:v2), do: chunk_key_encoding!({:v2, "."})

  defp chunk_key_encoding!({name, sep}) when name in [:default, :v2],
    do: %{"name" => Atom.to_string(name), "separator" => separator!(sep, :chunk_key_encoding)}

  defp chunk_key_encoding!(other) do
    raise ArgumentError,
          ~s(chunk_key_encoding must be {:default | :v2, "/" | "."}, got: #{inspect(other)})
  end

  defp names!(nil), do: nil

  defp names!(names) when is_list(names) do
    names
    |> Enum.map(&Options.text/1)
    |> Enum.map(fn
      nil ->
        nil

      name when is_binary(name) ->
        name

      name when is_atom(name) ->
        Atom.to_string(name)

      other ->
        raise ArgumentError, "dimension names must be strings or nil, got: #{inspect(other)}"
    end)
  end

  defp names!(other),
    do: raise(ArgumentError, "dimension_names must be a list, got: #{inspect(other)}")
end
