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
      `ZarrBridge.NDArray` for large data) and attributes;
    * `ZarrBridge.Codecs` runs any numcodecs codec on binaries.

  ## Example

      {:ok, array} =
        ZarrBridge.create(
          shape: {500, 500},
          chunks: {50, 50},
          dtype: :int32,
          compressor: :zlib,
          storage: :filesystem,
          path: "/shared/data/results",
          zarr_version: 2
        )

      :ok = ZarrBridge.Array.set_slice(array, data, start: {0, 0}, stop: {500, 500})
      :ok = ZarrBridge.Array.put_attributes(array, %{"units" => "counts"})

      {:ok, array} = ZarrBridge.open(storage: :filesystem, path: "/shared/data/measurements")
      {:ok, slice} = ZarrBridge.Array.get_slice(array, start: {0, 0}, stop: {100, 50})

  Both Zarr formats are read and written (the format of an existing array is
  detected from its `.zarray` or `zarr.json`), and the arrays are the same
  files zarr-python reads and writes.
  """

  alias ZarrBridge.{Array, CodecSpec, Dtype, Error, Metadata, Sidecar}

  @type mode :: :r | :"r+" | :a | :w | :"w-"

  @create_keys [
    :shape,
    :chunks,
    :dtype,
    :compressor,
    :filters,
    :fill_value,
    :order,
    :dimension_separator,
    :zarr_version,
    :codecs,
    :shards,
    :dimension_names,
    :attributes,
    :storage,
    :path,
    :mode,
    :server,
    :timeout
  ]

  @open_keys [:storage, :path, :mode, :server, :timeout]
  @modes [:r, :"r+", :a, :w, :"w-"]

  @doc """
  Creates an array and returns it.

  ## Options

    * `:path` (required) - the directory of the array. Relative paths are
      expanded against the current directory.
    * `:shape` (required) - a tuple of non-negative integers.
    * `:dtype` (required) - an Elixir dtype (see `ZarrBridge.NDArray`), e.g.
      `:float64`, `:int32`, `:bool`, `{:datetime64, :ns}`; a wire name such
      as `"float64"` is accepted too.
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
      when absent: zero, `false`, …). `:nan`, `:infinity`, `:neg_infinity`
      and `{re, im}` are accepted.
    * `:order` - `"C"`/`:c` or `"F"`/`:f` (the memory order of v2 chunks;
      v3 stores C order only).
    * `:dimension_separator` - `"."` or `"/"` for the chunk keys (defaults:
      `"."` for v2, `"/"` for v3).
    * `:dimension_names` - v3 only: a list of names (strings or `nil`).
    * `:attributes` - a map of user attributes.
    * `:storage` - `:filesystem` (the only storage; the default).
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
    check_opts!(opts, @create_keys)
    path = path!(opts)
    storage!(opts)
    mode = mode!(Keyword.get(opts, :mode, :"w-"), @modes)
    shape = int_tuple!(opts, :shape, required: true)
    format = Keyword.get(opts, :zarr_version, 3)

    if format not in [2, 3],
      do: raise(ArgumentError, "zarr_version must be 2 or 3, got: #{inspect(format)}")

    chunks =
      int_tuple!(opts, :chunks) ||
        shape |> Tuple.to_list() |> Enum.map(&max(&1, 1)) |> List.to_tuple()

    with {:ok, dtype} <- dtype(opts),
         {:ok, wire_dtype} <- Dtype.to_wire(dtype),
         {:ok, codec_params} <- codec_params(opts, dtype) do
      store = store(path)

      params =
        %{
          "store" => store,
          "path" => "",
          "mode" => Atom.to_string(mode),
          "zarr_format" => format,
          "shape" => Tuple.to_list(shape),
          "chunks" => Tuple.to_list(chunks),
          "dtype" => wire_dtype
        }
        |> Map.merge(codec_params)
        |> Map.merge(optional_params(opts, dtype))

      open_result(
        Sidecar.call(server(opts), "array.create", params, call_opts(opts)),
        opts,
        path,
        store,
        mode
      )
    end
  end

  @doc "Like `create/1`, but raises `ZarrBridge.Error`."
  @spec create!(keyword) :: Array.t()
  def create!(opts), do: bang(create(opts))

  @doc """
  Opens an existing array (Zarr v2 or v3, detected from its metadata).

  ## Options

    * `:path` (required) - the directory of the array.
    * `:storage` - `:filesystem` (the only storage; the default).
    * `:mode` - `:"r+"` (default: read and write), `:r` (read only: writes
      fail with `:read_only`) or `:a` (the same as `:"r+"` for an existing
      array). Opening never creates an array; use `create/1` for that.
      (The default is `:"r+"` rather than zarr-python's `"r"` so that an
      array opened with ExZarr's call can be updated, as ExZarr allows.)
    * `:server` - the sidecar (default `ZarrBridge.Sidecar`);
      `:timeout` - in milliseconds.

  ## Errors

  `:not_found` (no array there, or a group), `:unsupported_dtype`,
  `:codec_unavailable` (the array uses a codec the sidecar lacks),
  `:invalid_metadata`, `:forbidden_path`, and the sidecar's errors.
  """
  @spec open(keyword) :: {:ok, Array.t()} | {:error, Error.t()}
  def open(opts) when is_list(opts) do
    check_opts!(opts, @open_keys)
    path = path!(opts)
    storage!(opts)
    mode = mode!(Keyword.get(opts, :mode, :"r+"), [:r, :"r+", :a])
    store = store(path)
    # Opening only reads metadata; the mode is kept in the struct for writes.
    params = %{"store" => store, "path" => "", "mode" => "r"}

    open_result(
      Sidecar.call(server(opts), "array.open", params, call_opts(opts)),
      opts,
      path,
      store,
      mode
    )
  end

  @doc "Like `open/1`, but raises `ZarrBridge.Error`."
  @spec open!(keyword) :: Array.t()
  def open!(opts), do: bang(open(opts))

  # ------------------------------------------------------------------

  defp open_result(result, opts, path, store, mode) do
    case result do
      {:ok, %{"metadata" => wire}} ->
        with {:ok, metadata} <- Metadata.from_wire(wire) do
          {:ok,
           %Array{
             metadata: metadata,
             storage: :filesystem,
             path: path,
             mode: mode,
             server: server(opts),
             store: store
           }}
        end

      {:ok, other} ->
        {:error,
         %Error{
           code: :invalid_message,
           message: "unexpected result from the sidecar: #{inspect(other, limit: 10)}",
           details: %{result: other}
         }}

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
    Enum.reduce(opts, %{}, fn
      {:fill_value, value}, acc -> Map.put(acc, "fill_value", fill_value(value, dtype))
      {:order, order}, acc -> Map.put(acc, "order", order!(order))
      {:dimension_separator, sep}, acc -> Map.put(acc, "dimension_separator", separator!(sep))
      {:shards, _}, acc -> Map.put(acc, "shards", opts |> int_tuple!(:shards) |> list_or_nil())
      {:dimension_names, names}, acc -> Map.put(acc, "dimension_names", names!(names))
      {:attributes, attrs}, acc -> Map.put(acc, "attributes", attributes!(attrs))
      _, acc -> acc
    end)
  end

  defp list_or_nil(nil), do: nil
  defp list_or_nil(tuple), do: Tuple.to_list(tuple)

  defp fill_value({re, im}, dtype) when dtype in [:complex64, :complex128], do: [re, im]

  defp fill_value(value, dtype) when is_binary(value) and dtype == :bytes, do: {:bin, value}

  defp fill_value(value, {:fixed_bytes, _}) when is_binary(value), do: {:bin, value}
  defp fill_value(value, _dtype), do: value

  defp dtype(opts) do
    case Keyword.fetch(opts, :dtype) do
      {:ok, dtype} -> Dtype.normalize(dtype)
      :error -> raise ArgumentError, "the :dtype option is required"
    end
  end

  defp path!(opts) do
    case Keyword.fetch(opts, :path) do
      {:ok, path} when is_binary(path) and path != "" ->
        Path.expand(path)

      {:ok, other} ->
        raise ArgumentError, "path must be a non-empty string, got: #{inspect(other)}"

      :error ->
        raise ArgumentError, "the :path option is required"
    end
  end

  defp storage!(opts) do
    case Keyword.get(opts, :storage, :filesystem) do
      :filesystem ->
        :ok

      other ->
        raise ArgumentError, "only storage: :filesystem is supported, got: #{inspect(other)}"
    end
  end

  defp store(path), do: %{"kind" => "filesystem", "path" => path}

  defp mode!(mode, allowed) do
    found = Enum.find(allowed, &(&1 == mode or Atom.to_string(&1) == mode))
    found || raise ArgumentError, "mode must be one of #{inspect(allowed)}, got: #{inspect(mode)}"
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

  defp separator!(sep) when sep in [".", "/"], do: sep

  defp separator!(sep),
    do: raise(ArgumentError, ~s(dimension_separator must be "." or "/", got: #{inspect(sep)}))

  defp names!(nil), do: nil

  defp names!(names) when is_list(names) do
    Enum.map(names, fn
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

  defp attributes!(attrs) when is_map(attrs), do: attrs

  defp attributes!(other),
    do: raise(ArgumentError, "attributes must be a map, got: #{inspect(other)}")

  defp server(opts), do: Keyword.get(opts, :server, Sidecar)
  defp call_opts(opts), do: Keyword.take(opts, [:timeout])

  defp check_opts!(opts, allowed) do
    if not Keyword.keyword?(opts),
      do: raise(ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}")

    case Enum.uniq(Keyword.keys(opts)) -- allowed do
      [] ->
        :ok

      unknown ->
        raise ArgumentError, "unknown options #{inspect(unknown)}; known: #{inspect(allowed)}"
    end
  end

  defp bang({:ok, value}), do: value
  defp bang({:error, %Error{} = error}), do: raise(error)
end
