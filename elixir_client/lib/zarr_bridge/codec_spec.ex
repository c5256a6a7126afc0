defmodule ZarrBridge.CodecSpec do
  @moduledoc false
  # The one place where the Elixir forms of a codec become numcodecs config
  # maps (protocol/PROTOCOL.md §6), and back. Shared by ZarrBridge.Codecs,
  # ZarrBridge.create/1 (compressor, filters) and ZarrBridge.Metadata.
  #
  # Forms accepted:
  #   * an atom: `:zlib`, `:bzip2` (alias of `:bz2`), `:vlen_utf8` (for the
  #     id "vlen-utf8"), ...;
  #   * `{atom, keyword}`: `{:blosc, cname: "zstd", clevel: 3, shuffle: :shuffle}`;
  #   * a config map: `%{"id" => "zstd", "level" => 3}` (atom keys are
  #     converted to strings);
  #   * an id string: `"zstd"`.
  #
  # Options become string keys. Values: blosc's `shuffle` atoms become their
  # numbers, a dtype-valued option (`dtype`, `astype`, `encode_dtype`, ...)
  # given as an Elixir dtype becomes its wire name (NumPy reads it), other
  # atoms (except true/false/nil) become strings.

  alias ZarrBridge.{Dtype, Error}

  @type form :: atom | String.t() | {atom | String.t(), keyword | map} | map
  @type config :: %{required(String.t()) => term}

  # Atom -> id where the id is not the atom's own name.
  @aliases %{
    bzip2: "bz2",
    vlen_utf8: "vlen-utf8",
    vlen_bytes: "vlen-bytes",
    vlen_array: "vlen-array"
  }

  @shuffle %{autoshuffle: -1, noshuffle: 0, shuffle: 1, bitshuffle: 2}

  @doc "The numcodecs id for a codec atom or id string."
  @spec id(atom | String.t()) :: String.t()
  def id(name) when is_atom(name) and is_map_key(@aliases, name), do: Map.fetch!(@aliases, name)
  def id(name) when is_atom(name), do: Atom.to_string(name)
  def id(name) when is_binary(name), do: name

  @doc """
  The atom for a codec id: `"vlen-utf8"` -> `:vlen_utf8`, `"numcodecs.zlib"`
  (zarr-python's v3 name) -> `:zlib`. Only call it with ids that come from
  the sidecar (a bounded set: its codec registry), as it creates atoms.
  """
  @spec id_to_atom(String.t()) :: atom
  def id_to_atom("numcodecs." <> id), do: id_to_atom(id)
  def id_to_atom(id) when is_binary(id), do: id |> String.replace("-", "_") |> String.to_atom()

  @doc "Converts one codec form to a numcodecs config map."
  @spec to_config(form) :: {:ok, config} | {:error, Error.t()}
  def to_config(form) do
    {:ok, config!(form)}
  catch
    {:invalid, message, details} -> {:error, invalid(message, details)}
  end

  @doc "Converts `nil` (no codec) or a codec form."
  @spec to_config_or_nil(form | nil) :: {:ok, config | nil} | {:error, Error.t()}
  def to_config_or_nil(nil), do: {:ok, nil}
  def to_config_or_nil(form), do: to_config(form)

  @doc "Converts a list of codec forms (filters), or `nil`."
  @spec to_configs([form] | nil) :: {:ok, [config] | nil} | {:error, Error.t()}
  def to_configs(nil), do: {:ok, nil}

  def to_configs(forms) when is_list(forms) do
    {:ok, Enum.map(forms, &config!/1)}
  catch
    {:invalid, message, details} -> {:error, invalid(message, details)}
  end

  def to_configs(other),
    do: {:error, invalid("filters must be a list of codecs or nil", %{value: other})}

  @doc """
  Fills in what an array's dtype implies and numcodecs would otherwise
  default wrongly: `shuffle`'s `elementsize`, `delta`'s and `quantize`'s
  `dtype`, and `fixedscaleoffset`'s `dtype`. Keys the caller gave are kept.
  """
  @spec with_dtype(config, Dtype.t()) :: config
  def with_dtype(%{"id" => "shuffle"} = config, dtype) do
    case Dtype.itemsize(dtype) do
      n when is_integer(n) -> Map.put_new(config, "elementsize", n)
      :variable -> config
    end
  end

  def with_dtype(%{"id" => id} = config, dtype)
      when id in ["delta", "quantize", "fixedscaleoffset"] do
    case Dtype.to_wire(dtype) do
      {:ok, wire} when is_binary(wire) -> Map.put_new(config, "dtype", wire)
      _ -> config
    end
  end

  def with_dtype(config, _dtype), do: config

  @doc """
  Splits a config map into `{atom, keyword}` (the keyword sorted by key) for
  `ZarrBridge.Metadata`. Creates atoms from the keys and the id, which come
  from the sidecar's metadata (numcodecs' config keys: a bounded set).
  """
  @spec from_config(map) :: {atom, keyword}
  def from_config(%{"id" => id} = config) when is_binary(id) do
    options =
      config
      |> Map.delete("id")
      |> Enum.map(fn {key, value} -> {String.to_atom(to_string(key)), plain(value)} end)
      |> Enum.sort()

    {id_to_atom(id), options}
  end

  # Bins inside configs (rare) come back as {:bin, data}.
  defp plain({:bin, data}), do: data
  defp plain(list) when is_list(list), do: Enum.map(list, &plain/1)
  defp plain(%{} = map), do: Map.new(map, fn {k, v} -> {k, plain(v)} end)
  defp plain(value), do: value

  # ------------------------------------------------------------------

  defp config!(name) when is_atom(name) and name not in [nil, true, false],
    do: %{"id" => id(name)}

  defp config!(name) when is_binary(name) and name != "", do: %{"id" => name}

  defp config!({name, options}) when (is_atom(name) or is_binary(name)) and is_list(options) do
    if not Keyword.keyword?(options) do
      throw(
        {:invalid, "codec options must be a keyword list: #{inspect(options)}", %{codec: name}}
      )
    end

    id = id(name)

    Map.new(options, fn {key, value} -> option(id, Atom.to_string(key), value) end)
    |> Map.put("id", id)
  end

  defp config!({name, %{} = options}) when is_atom(name) or is_binary(name),
    do: config!(Map.put(options, "id", id(name)))

  defp config!(%{} = config) when not is_struct(config) do
    config = Map.new(config, fn {key, value} -> {to_key(key, config), value} end)

    case Map.fetch(config, "id") do
      {:ok, id} when is_binary(id) and id != "" ->
        Map.new(config, fn {key, value} -> option(id, key, value) end)

      {:ok, id} when is_atom(id) and id not in [nil, true, false] ->
        Map.new(config, fn {key, value} -> option(id(id), key, value) end)

      _ ->
        throw({:invalid, "a codec config map needs an \"id\": #{inspect(config)}", %{key: "id"}})
    end
  end

  defp config!(other),
    do: throw({:invalid, "not a codec: #{inspect(other)}", %{value: other}})

  defp to_key(key, _config) when is_binary(key), do: key
  defp to_key(key, _config) when is_atom(key), do: Atom.to_string(key)

  defp to_key(key, config),
    do: throw({:invalid, "codec config keys must be strings: #{inspect(config)}", %{key: key}})

  defp option(_id, "id", value) when is_atom(value), do: {"id", id(value)}
  defp option(_id, "id", value), do: {"id", value}

  defp option("blosc", "shuffle", value) when is_atom(value) do
    case Map.fetch(@shuffle, value) do
      {:ok, n} ->
        {"shuffle", n}

      :error ->
        throw(
          {:invalid,
           "blosc shuffle must be one of #{inspect(Map.keys(@shuffle))} or an integer, got: #{inspect(value)}",
           %{key: "shuffle"}}
        )
    end
  end

  defp option(id, key, value) when not is_binary(value) and not is_nil(value) do
    if dtype_key?(key) do
      case Dtype.to_wire(value) do
        {:ok, wire} when is_binary(wire) -> {key, wire}
        _ -> throw({:invalid, "#{key} must be a dtype, got: #{inspect(value)}", %{key: key}})
      end
    else
      plain_option(id, key, value)
    end
  end

  defp option(id, key, value), do: plain_option(id, key, value)

  # numcodecs' dtype-valued keys: dtype, astype, encode_dtype, decode_dtype.
  defp dtype_key?(key),
    do: key in ["dtype", "astype"] or String.ends_with?(key, ["_dtype", "_astype"])

  defp plain_option(_id, key, value) when is_atom(value) and value not in [nil, true, false],
    do: {key, Atom.to_string(value)}

  defp plain_option(_id, key, value), do: {key, value}

  defp invalid(message, details),
    do: %Error{code: :invalid_codec_config, message: message, details: details}
end
